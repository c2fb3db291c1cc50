"""fastmodel's composed kernel: processes on CPUs over a page allocator, page tables, TLBs
and one address space per mm.  Satisfies ``specs.kernel.Kernel``.

Observably identical to the reference composition (every result, every view, every pfn,
PTE and TLB entry after every call), built differently for speed:

* user pages are pfns into parallel numpy arrays (``fastmodel.kernel_pages``), not objects
  in a dict, and their bytes are stored only once written;
* the unmap, exit, fork and mremap paths find, clear and copy present PTEs a whole 2 MiB
  table at a time when the tables are FastPageTables (``fastmodel.kernel_ptes``), and apply
  the struct-page side of a zap or a copy to arrays of pfns at once; any other table part is
  driven through its contract, entry by entry;
* the fault path (``fastmodel.fault``) is flattened onto memoryviews;
* the OOM killer (``fastmodel.oom_kernel``) takes its decisions from ``fastmodel.oom.FastOom``,
  and its reaper zaps and releases like exit, a table and an array of pfns at a time.

The default parts are fastmodel's; ``parts`` replaces any of them exactly as it does for the
reference kernel.  Imports no reference-model code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, TypeVar

import attrs
import numpy as np

from fastmodel import fault
from fastmodel.buddy import FastBuddy
from fastmodel.fail_page_alloc import FailPageAlloc
from fastmodel.fork import can_dup, copy_vma_ptes, dup_space
from fastmodel.kernel_pages import Inode, PageFrames
from fastmodel.kernel_ptes import I64, ranges_for
from fastmodel.kernel_ranges import (
    Interval,
    coverage,
    dontneed_pieces,
    intersect,
    neighbours,
    subtract,
)
from fastmodel.oom import FAST_OOM
from fastmodel.oom_kernel import OomKiller, OomPolicy
from fastmodel.pagetable import FastPageTables
from fastmodel.tlb import FastTlb
from fastmodel.vma import FastAddressSpace
from specs import gfp
from specs import pte as pt
from specs.buddy import Capability as BuddyCapability
from specs.buddy import PageAllocator
from specs.errno import Errno
from specs.kernel import (
    SI_KERNEL,
    SIGKILL,
    SIGSEGV,
    VM_FAULT_OOM,
    Capability,
    FaultResult,
    InodeView,
    KernelView,
    OomTask,
    PartFactory,
    ProcessView,
)
from specs.machine import MachineConfig
from specs.pagetable import Level, PageTables
from specs.tlb import TLB_FLUSH_ALL, Outcome, Tlb
from specs.tlb import is_canonical as tlb_canonical
from specs.vma import (
    MADV_DONTNEED,
    MAP_FIXED,
    MAP_NONBLOCK,
    MAP_POPULATE,
    MREMAP_FIXED,
    O_RDWR,
    ULONG_MASK,
    VM_ACCOUNT,
    VM_DONTCOPY,
    VM_LOCKED,
    AddressSpace,
    MmView,
    VmCommit,
    page_align,
    write_sysctl,
)
from specs.vma import Capability as VmaCapability

EINVAL: Final = -Errno.EINVAL
ENOMEM: Final = -Errno.ENOMEM
ESRCH: Final = -Errno.ESRCH
EBUSY: Final = -Errno.EBUSY
ENOSYS: Final = -Errno.ENOSYS
#: what a call made on behalf of a process with SIGKILL pending returns (4.6 never lets it
#: make one: it dies on its way back to user mode)
EINTR: Final = -Errno.EINTR  # [Simplified: such a call is refused outright]
PAGE_SIZE: Final = pt.PAGE_SIZE
#: a handled fault makes the retried access succeed in 4.6; a third fault on one access
#: means a part misbehaves, and the kernel stops rather than loop
MAX_FAULTS_PER_ACCESS: Final = 3
#: the zero page's allocation at boot
GFP_ZERO_PAGE: Final = gfp.GFP_KERNEL | gfp.__GFP_ZERO
_GP: Final = FaultResult(signal=SIGSEGV, si_code=SI_KERNEL, addr=0)
_SPECIAL: Final = np.uint64(pt._PAGE_SPECIAL)
_PFN_MASK: Final = np.uint64(pt.PTE_PFN_MASK)
_SHIFT: Final = np.uint64(pt.PAGE_SHIFT)
DEFAULT_PARTS: Final[Mapping[str, PartFactory]] = {
    "buddy": FastBuddy, "pagetable": FastPageTables, "tlb": FastTlb, "vma": FastAddressSpace}


F = TypeVar("F", bound=Callable[..., Any])


def _changes(method: F) -> F:
    """Mark a call that may change what ``view()`` shows: it drops the cached view (the
    state machines read the view several times between two calls)."""
    @functools.wraps(method)
    def wrapper(self: FastKernel, *args: Any, **kwargs: Any) -> Any:
        self._view = None
        return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


@attrs.define(eq=False)
class Proc:
    """One task and its mm (no threads: one task per mm)."""

    pid: int
    ppid: int
    mm: int
    space: AddressSpace
    #: address-space file ident -> kernel inode id
    files: dict[int, int] = attrs.Factory(dict)
    #: [4.6: mm_struct rss_stat] indexed by RssMember
    rss: list[int] = attrs.Factory(lambda: [0, 0, 0, 0])
    #: oom_score_adj, credentials, SIGKILL and TIF_MEMDIE (``fastmodel/oom_kernel.py``)
    oom: OomTask = attrs.Factory(OomTask)


class FastKernel:
    """The fast composition; ``parts`` maps buddy/pagetable/tlb/vma to factories used
    instead of fastmodel's.  ``oom=False`` leaves the OOM killer out (no Capability.OOM), as
    ``RefKernel(oom=False)`` does."""

    #: what ``vmconform check --impl fastmodel.kernel:FastKernel`` implements
    subsystem: ClassVar[str] = "fault"
    #: the OOM decisions (a mutant may swap in a broken policy) and the glue applying them
    oom_policy: OomPolicy = FAST_OOM
    oom_killer: type[OomKiller] = OomKiller

    def __init__(self, config: MachineConfig,
                 parts: Mapping[str, PartFactory] | None = None, *, oom: bool = True) -> None:
        chosen = dict(parts or {})
        make = {**DEFAULT_PARTS, **chosen}
        self.config = config
        inner: PageAllocator = make["buddy"](config)  # type: ignore[assignment]
        #: the parts allocate through the injector too, so any allocation can be failed
        self.pages = FailPageAlloc(inner)
        self.tables: PageTables = make["pagetable"](config, self.pages)  # type: ignore[assignment]
        self.tlb: Tlb = make["tlb"](config, self)  # type: ignore[assignment]
        self._new_space: PartFactory = make["vma"]
        self.ranges = ranges_for(self.tables)
        self.refcounted = BuddyCapability.REFCOUNT in self.pages.capabilities
        self.frames = PageFrames(config.nr_pages)
        zero = self.pages.alloc_pages(GFP_ZERO_PAGE, 0)
        if zero is None:
            raise ValueError(f"machine {config.name} has no page for the zero page")
        #: empty_zero_page [4.6: arch/x86/kernel/head_64.S].  [Simplified: allocated from
        #: the page allocator at boot and never freed, not part of the kernel image.]
        self.zero_pfn: int = zero
        self.procs: dict[int, Proc] = {}
        self.running: list[int] = [-1] * config.nr_cpus
        self.inodes: dict[int, Inode] = {}
        #: pfns a user access reached that held no user page (a stale TLB entry)
        self.stray: set[int] = set()
        self.next_pid = 1
        self.next_inode = 1
        self._view: KernelView | None = None
        caps = {Capability.FAIL_PAGE_ALLOC}
        self.oom: OomKiller | None = None
        if oom:
            self.oom = self.oom_killer(self, self.oom_policy)
            self.pages.on_exhausted = self.oom.alloc_failed
            caps.add(Capability.OOM)
        #: vm_committed_as and the vm sysctls of the whole machine, shared by every space
        #: (None when the vma part keeps its own: no Capability.OVERCOMMIT)
        self.commit: VmCommit | None = None
        probe = self._space()
        if VmaCapability.SHARED_COMMIT in probe.capabilities:
            self.commit = VmCommit()
            caps.add(Capability.OVERCOMMIT)
        if can_dup(probe):
            caps.add(Capability.FORK)
        if not chosen:
            caps.add(Capability.EXACT)
        self.capabilities: frozenset[Capability] = frozenset(caps)

    def _space(self) -> AddressSpace:
        """A new address space, charging the machine's counter when there is one."""
        commit = self.commit
        if commit is None:
            space: AddressSpace = self._new_space(self.config)  # type: ignore[assignment]
        else:
            space = self._new_space(self.config, commit=commit)  # type: ignore[assignment]
        return space

    def _release(self, space: AddressSpace) -> None:
        """exit_mmap's vm_unacct_memory: every charge the mm made goes back."""
        if self.commit is not None:
            space.exit_mmap()  # type: ignore[attr-defined]

    def fail_page_alloc(self, times: int, space: int = 0) -> int:
        """Arm page-allocation fault injection (``fastmodel/fail_page_alloc.py``)."""
        return self.pages.arm(times, space)

    # -- the TranslationSource the TLB walks ------------------------------------------------------

    def lookup(self, mm: int, vaddr: int) -> int:
        """The leaf entry at vaddr of TLB mm ``mm`` (page-table mm + 1), 0 when none."""
        if mm <= 0:
            return 0
        level, value = self.tables.walk(mm - 1, vaddr)
        return value if level == Level.PTE else 0

    def mark(self, mm: int, vaddr: int, bits: int) -> None:
        """The MMU setting ACCESSED/DIRTY in the entry it walked."""
        value = self.lookup(mm, vaddr)
        if value:
            self.tables.set_pte_at(mm - 1, vaddr, value | bits)

    # -- struct page ------------------------------------------------------------------------------

    def alloc_user_page(self, member: int, gfp_mask: int, cpu: int) -> int | None:
        """An order-0 user page charged to RSS counter ``member``, holding the allocation's
        reference; None when the allocator has none."""
        pfn = self.pages.alloc_pages(gfp_mask, 0, cpu)
        if pfn is not None:
            self.frames.add(pfn, member)
        return pfn

    def get_page(self, pfn: int) -> None:
        """[4.6: include/linux/mm.h get_page]."""
        self.frames.m_ref[pfn] += 1
        if self.refcounted:
            self.pages.get_page(pfn)

    def put_page(self, pfn: int, cpu: int = 0) -> None:
        """[4.6: include/linux/mm.h put_page] the last reference frees the page."""
        frames = self.frames
        left = frames.m_ref[pfn] - 1
        frames.m_ref[pfn] = left
        if self.refcounted:
            self.pages.put_page(pfn, cpu)
        elif not left:
            self.pages.free_pages(pfn, 0, cpu)
        if not left:
            frames.forget(pfn)

    def release(self, pfns: I64, cpu: int) -> None:
        """put_page for each of pfns (repeats allowed), in order: the mmu_gather's release
        after a flush [4.6: mm/memory.c tlb_finish_mmu, free_pages_and_swap_cache].

        The page allocator sees the same put_page (or free) sequence one by one would give;
        the kernel's own counts are updated for all of them at once."""
        if not pfns.size:
            return
        frames = self.frames
        if self.refcounted:
            put = self.pages.inner.put_page  # the injector only forwards frees
            for pfn in pfns.tolist():
                put(pfn, cpu)
            np.subtract.at(frames.refcount, pfns, 1)
            for pfn in np.unique(pfns[frames.refcount[pfns] == 0]).tolist():
                frames.forget(pfn)
        else:
            for pfn in pfns.tolist():
                self.put_page(pfn, cpu)

    def normal_page(self, entry: int) -> int:
        """[4.6: mm/memory.c vm_normal_page] the user page an entry maps, -1 for a special
        entry (the zero page) or a pfn holding no user page."""
        if entry & pt._PAGE_SPECIAL:
            return -1
        pfn = (entry & pt.PTE_PFN_MASK) >> pt.PAGE_SHIFT
        return pfn if self.frames.is_user(pfn) else -1

    def normal_pages(self, entries: Any) -> I64:
        """normal_page over an array of entries: the pfns of the user pages, in order."""
        entries = entries[(entries & _SPECIAL) == 0]
        pfns: I64 = ((entries & _PFN_MASK) >> _SHIFT).astype(np.int64)
        return pfns[self.frames.user_mask(pfns)]

    @staticmethod
    def tlb_mm(proc: Proc) -> int:
        """The TLB's id for proc's mm (the TLB keeps 0 for init_mm)."""
        return proc.mm + 1

    # -- processes and CPUs -----------------------------------------------------------------------

    def _cpu_of(self, proc: Proc) -> int:
        """The CPU proc's system calls run on.  [Simplified: a process that is not running
        makes its calls from CPU 0 without being switched in.]"""
        try:
            return self.running.index(proc.pid)
        except ValueError:
            return 0

    @_changes
    def spawn(self) -> int:
        """[4.6: fs/exec.c bprm_mm_init; kernel/fork.c mm_alloc] a new process with its
        stack VMA and an empty PGD."""
        if self.oom is not None:
            self.oom.current = None  # exec'd by no process the model knows
        mm = self.tables.mm_alloc()
        if mm is None:
            return ENOMEM
        committed = self.commit.pages if self.commit is not None else 0
        space = self._space()
        after = space.view()
        if self.commit is not None and after.committed - committed != sum(
                vma.pages for vma in after.vmas if vma.flags & VM_ACCOUNT):
            # the stack's charge was refused: exec fails, as in refmodel.kernel.spawn
            self.commit.pages = committed
            self.tables.mm_teardown(mm)
            return ENOMEM
        proc = Proc(pid=self.next_pid, ppid=0, mm=mm, space=space)
        self.procs[proc.pid] = proc
        self.next_pid += 1
        return proc.pid

    @_changes
    def fork(self, pid: int) -> int:
        """[4.6: kernel/fork.c copy_mm, dup_mm, dup_mmap] the child's pid, or -errno with the
        half-built child torn down as mmput would."""
        parent = self.procs.get(pid)
        if parent is None:
            return ESRCH
        if self._dying(parent):
            return EINTR
        if Capability.FORK not in self.capabilities:
            return ENOSYS
        cpu = self._cpu_of(parent)
        space = dup_space(parent.space)
        if isinstance(space, int):
            return space
        mm = self.tables.mm_alloc()
        if mm is None:
            self._release(space)
            return ENOMEM
        child = Proc(pid=self.next_pid, ppid=pid, mm=mm, space=space, files=dict(parent.files),
                     oom=parent.oom.inherit())
        failed = 0
        for vma in parent.space.view().vmas:
            if vma.flags & VM_DONTCOPY:  # the child has no such VMA [4.6: dup_mmap]
                continue
            failed = copy_vma_ptes(self, child, parent, vma)
            if failed:
                break
        # [4.6: kernel/fork.c dup_mmap flush_tlb_mm] the parent's COW entries lost RW
        self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(parent), 0, TLB_FLUSH_ALL)
        if failed:
            self._exit_mmap(child, cpu)
            return failed
        self.procs[child.pid] = child
        self.next_pid += 1
        return child.pid

    @_changes
    def exit(self, pid: int) -> int:
        """[4.6: kernel/exit.c exit_mm; kernel/fork.c mmput; mm/mmap.c exit_mmap] idle the
        CPU (lazily on the dying mm), zap every PTE, flush, free pages and tables.
        [Simplified: the PGD goes at exit, once the flush has made lazy CPUs leave the mm,
        not at the last mmdrop.]"""
        proc = self.procs.get(pid)
        if proc is None:
            return ESRCH
        cpu = self._cpu_of(proc)
        if pid in self.running:
            self.tlb.enter_lazy_tlb(cpu)
            self.running[cpu] = -1
        self._exit_mmap(proc, cpu)
        del self.procs[pid]
        return 0

    def _exit_mmap(self, proc: Proc, cpu: int) -> None:
        gathered = [self._zap(proc, vma.start, vma.end)[0] for vma in proc.space.view().vmas]
        self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(proc), 0, TLB_FLUSH_ALL)
        if gathered:
            self.release(np.concatenate(gathered), cpu)
        self.tables.mm_teardown(proc.mm)
        self._release(proc.space)

    @_changes
    def switch(self, cpu: int, pid: int) -> int:
        """[4.6: kernel/sched/core.c context_switch] run pid on cpu (-1: idle).  -EINVAL for
        a bad CPU, -ESRCH for no such process, -EBUSY when it runs elsewhere (no
        migration)."""
        if not 0 <= cpu < self.config.nr_cpus:
            return EINVAL
        if pid == -1:
            if self.running[cpu] != -1:
                self.tlb.enter_lazy_tlb(cpu)
                self.running[cpu] = -1
            return 0
        proc = self.procs.get(pid)
        if proc is None:
            return ESRCH
        if self.running[cpu] == pid:
            return 0
        if pid in self.running:
            return EBUSY
        self.tlb.switch_mm(cpu, self.tlb_mm(proc))
        self.running[cpu] = pid
        return 0

    # -- user accesses ----------------------------------------------------------------------------

    def _current(self, cpu: int) -> Proc | None:
        if not 0 <= cpu < self.config.nr_cpus:
            return None
        pid = self.running[cpu]
        return None if pid == -1 else self.procs[pid]

    def _caller(self, pid: int) -> Proc | int:
        """The process a system call runs as: -ESRCH for none, -EINTR once it has SIGKILL
        pending (it entered the kernel and becomes current either way)."""
        proc = self.procs.get(pid)
        if proc is None:
            return ESRCH
        return EINTR if self._dying(proc) else proc

    def _dying(self, proc: Proc) -> bool:
        """Enter the kernel on proc's behalf (it becomes current); True when it has SIGKILL
        pending, so it makes no call and runs no user code again and the operation changes
        nothing (``specs/oom.md``, "A killed process")."""
        if self.oom is None:
            return False
        self.oom.current = proc.pid
        return proc.oom.sigkill

    def _user_fault(self, failed: FaultResult | None) -> FaultResult | None:
        """A user access that ended in VM_FAULT_OOM runs pagefault_out_of_memory, and is
        then reported unchanged.  [4.6: arch/x86/mm/fault.c mm_fault_error]"""
        if failed is not None and failed.vm_fault & VM_FAULT_OOM and self.oom is not None:
            self.oom.pagefault()
        return failed

    def _reach(self, proc: Proc, cpu: int, addr: int, write: bool) -> int | FaultResult:
        """The pfn one access reaches, after the faults it takes."""
        if not tlb_canonical(addr):
            return _GP  # a non-canonical address is a #GP
        access = self.tlb.access
        for _ in range(MAX_FAULTS_PER_ACCESS):
            result = access(cpu, addr, write)
            if isinstance(result, int):
                return _GP
            outcome = result.outcome
            if outcome is Outcome.HIT or outcome is Outcome.FILL:
                return result.pfn
            if outcome is Outcome.GENERAL_PROTECTION:
                return _GP
            failed = fault.do_page_fault(self, proc, cpu, addr, write, result.error_code)
            if failed is not None:
                return failed
        raise RuntimeError(f"access to {addr:#x} still faults after {MAX_FAULTS_PER_ACCESS} "
                           "handled faults: a part breaks the fault path")

    def _holds_page(self, pfn: int) -> bool:
        if pfn == self.zero_pfn or self.frames.is_user(pfn):
            return True
        self.stray.add(pfn)
        return False

    def _transfer(self, proc: Proc, cpu: int, addr: int, n: int, data: bytes | None,
                  out: bytearray) -> FaultResult | None:
        """Page by page, read into out or store data; stop at the first fault."""
        done = 0
        frames = self.frames
        while done < n:
            pos = addr + done
            pfn = self._reach(proc, cpu, pos, data is not None)
            if isinstance(pfn, FaultResult):
                return attrs.evolve(pfn, done=done)
            offset = pos & (PAGE_SIZE - 1)
            chunk = min(PAGE_SIZE - offset, n - done)
            if self._holds_page(pfn):
                if data is not None:
                    frames.write(pfn, offset, data[done:done + chunk])
                else:
                    out[done:done + chunk] = frames.read(pfn, offset, chunk)
            done += chunk
        return None

    @_changes
    def read(self, cpu: int, addr: int, n: int) -> bytes | FaultResult | int:
        proc = self._current(cpu)
        if proc is None or n < 0 or addr < 0:
            return EINVAL
        if self._dying(proc):
            return FaultResult(signal=SIGKILL, si_code=SI_KERNEL, addr=addr)
        out = bytearray(n)
        failed = self._user_fault(self._transfer(proc, cpu, addr, n, None, out))
        return bytes(out) if failed is None else failed

    @_changes
    def write(self, cpu: int, addr: int, data: bytes) -> int | FaultResult:
        proc = self._current(cpu)
        if proc is None or addr < 0:
            return EINVAL
        if self._dying(proc):
            return FaultResult(signal=SIGKILL, si_code=SI_KERNEL, addr=addr)
        failed = self._user_fault(self._transfer(proc, cpu, addr, len(data), bytes(data),
                                                 bytearray()))
        return len(data) if failed is None else failed

    @staticmethod
    def access_ok(addr: int, n: int) -> bool:
        """[4.6: arch/x86/include/asm/uaccess.h access_ok] under USER_DS."""
        return addr >= 0 and addr + n <= pt.TASK_SIZE_MAX

    @_changes
    def copy_from_user(self, cpu: int, addr: int, n: int) -> tuple[int, bytes] | int:
        """[4.6: arch/x86/lib/usercopy_64.c copy_user_handle_tail] the readable prefix is
        copied, the rest of the buffer zeroed."""
        proc = self._current(cpu)
        if proc is None or n < 0:
            return EINVAL
        if not self.access_ok(addr, n) or self._dying(proc):
            return n, bytes(n)
        out = bytearray(n)
        failed = self._transfer(proc, cpu, addr, n, None, out)
        done = n if failed is None else failed.done
        out[done:] = bytes(n - done)
        return n - done, bytes(out)

    @_changes
    def copy_to_user(self, cpu: int, addr: int, data: bytes) -> int:
        """[4.6: arch/x86/include/asm/uaccess_64.h copy_to_user] stores as the kernel, which
        break COW like user writes (CR0.WP); the uncopied count."""
        proc = self._current(cpu)
        if proc is None:
            return EINVAL
        if not self.access_ok(addr, len(data)) or self._dying(proc):
            return len(data)
        failed = self._transfer(proc, cpu, addr, len(data), bytes(data), bytearray())
        return 0 if failed is None else len(data) - failed.done

    # -- address-space system calls ---------------------------------------------------------------

    def space(self, pid: int) -> AddressSpace:
        return self.procs[pid].space

    @_changes
    def open_file(self, pid: int, size: int, mode: int = O_RDWR, data: bytes = b"") -> int:
        proc = self._caller(pid)
        if isinstance(proc, int):
            return proc
        if len(data) > max(size, 0):
            return EINVAL
        fd = proc.space.open_file(size, mode)
        if fd < 0:
            return fd
        ident = next(f.ident for f in proc.space.view().files if f.fd == fd)
        proc.files[ident] = self._new_inode(size, shmem=False, disk=bytes(data))
        return fd

    def _new_inode(self, size: int, shmem: bool, disk: bytes = b"") -> int:
        ident = self.next_inode
        self.inodes[ident] = Inode(ident=ident, size=size, shmem=shmem, disk=disk)
        self.next_inode += 1
        return ident

    @_changes
    def mmap(self, pid: int, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        proc = self._caller(pid)
        if isinstance(proc, int):
            return proc
        before = proc.space.view()
        result = proc.space.mmap(addr, length, prot, flags, fd, offset)
        cpu = self._cpu_of(proc)
        if result >= 0 and flags & MAP_FIXED:
            self._unmap_replaced(proc, cpu, before, result, result + page_align(length))
        self._reconcile(proc, cpu, before)
        if result >= 0:
            vma = proc.space.find_vma(result)
            if vma is not None and vma.file is not None and vma.file not in proc.files:
                # a shared anonymous mapping: its shmem object appears with the mapping
                size = next(f.size for f in proc.space.view().files if f.ident == vma.file)
                proc.files[vma.file] = self._new_inode(size, shmem=True)
            if vma is not None and (vma.flags & VM_LOCKED
                                    or flags & (MAP_POPULATE | MAP_NONBLOCK) == MAP_POPULATE):
                # [4.6: mm/mmap.c do_mmap (*populate); mm/util.c vm_mmap_pgoff mm_populate]
                fault.populate(self, proc, cpu, result, page_align(length))
        return result

    @_changes
    def munmap(self, pid: int, addr: int, length: int) -> int:
        return self._unmapping_call(pid, "munmap", addr, length)

    @_changes
    def brk(self, pid: int, addr: int) -> int:
        return self._unmapping_call(pid, "brk", addr)

    def _unmapping_call(self, pid: int, call: str, *args: int) -> int:
        """A call whose only PTE work is unmapping what it removed."""
        proc = self._caller(pid)
        if isinstance(proc, int):
            return proc
        before = proc.space.view()
        result: int = getattr(proc.space, call)(*args)
        self._reconcile(proc, self._cpu_of(proc), before)
        return result

    @_changes
    def mprotect(self, pid: int, addr: int, length: int, prot: int) -> int:
        """[4.6: mm/mprotect.c sys_mprotect, mprotect_fixup, change_protection] every VMA
        piece the call changed (judged against the VMAs *before* it, since a changed piece
        may have merged into an unchanged neighbour) gets its new vm_page_prot in its PTEs,
        and a range flush when any entry changed."""
        proc = self._caller(pid)
        if isinstance(proc, int):
            return proc
        before = proc.space.view()
        result = proc.space.mprotect(addr, length, prot)
        if result not in (0, ENOMEM):
            return result
        cpu = self._cpu_of(proc)
        end = addr + page_align(length)
        for old in before.vmas:
            lo, hi = max(old.start, addr), min(old.end, end)
            if lo >= hi:
                continue
            vma = proc.space.find_vma(lo)
            if vma is None or vma.start > lo or vma.flags == old.flags:
                continue
            if self.tables.change_protection(proc.mm, lo, hi,
                                             fault.page_prot(self, proc, vma)) > 0:
                self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(proc), lo, hi, vma.flags)
        return result

    @_changes
    def mremap(self, pid: int, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        """[4.6: mm/mremap.c mremap_to, move_vma, move_page_tables, move_ptes] a fixed target
        is unmapped first; a moved mapping takes its PTEs along and flushes the old range."""
        proc = self._caller(pid)
        if isinstance(proc, int):
            return proc
        before = proc.space.view()
        result = proc.space.mremap(old_addr, old_len, new_len, flags, new_addr)
        cpu = self._cpu_of(proc)
        if result >= 0 and flags & MREMAP_FIXED:
            self._unmap_replaced(proc, cpu, before, result, result + page_align(new_len))
        if result >= 0 and result != old_addr:
            self._move_ptes(proc, cpu, old_addr, result,
                            min(page_align(old_len), page_align(new_len)))
        self._reconcile(proc, cpu, before)
        return result

    @_changes
    def madvise(self, pid: int, addr: int, length: int, advice: int) -> int:
        """[4.6: mm/madvise.c sys_madvise, madvise_dontneed; mm/memory.c zap_page_range] the
        space decides; MADV_DONTNEED then zaps every piece it accepted, one mmu_gather per
        VMA piece (zap, flush the cleared span, release), freeing no page table."""
        proc = self._caller(pid)
        if isinstance(proc, int):
            return proc
        space = proc.space
        if VmaCapability.MADVISE not in space.capabilities:
            return ENOSYS
        before = space.view()
        result: int = space.madvise(addr, length, advice)  # type: ignore[attr-defined]
        if advice & ULONG_MASK == MADV_DONTNEED:
            cpu = self._cpu_of(proc)
            for start, end in dontneed_pieces(before, addr, length):
                pfns, span = self._zap(proc, start, end)
                if span is not None:
                    self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(proc), span[0], span[1])
                if pfns.size:
                    self.release(pfns, cpu)
        return result

    def _move_ptes(self, proc: Proc, cpu: int, old: int, new: int, length: int) -> None:
        """Move each present entry of [old, old + length) to the same offset from new,
        soft-dirty.  [Simplified: when a table cannot be allocated the move stops there, and
        the entries not moved are zapped with the old range, where 4.6 moves everything
        back and fails the call.]"""
        addrs, entries = self.ranges.present(proc.mm, old, old + length)
        tables, mm = self.tables, proc.mm
        moved = False
        for addr, entry in zip(addrs.tolist(), entries.tolist(), strict=True):
            target = new + addr - old
            if tables.pte_alloc(mm, target):
                break
            tables.ptep_get_and_clear(mm, addr)
            tables.set_pte_at(mm, target, entry | pt._PAGE_SOFT_DIRTY)
            moved = True
        if moved:
            self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(proc), old, old + length)

    # -- unmapping --------------------------------------------------------------------------------

    def _zap(self, proc: Proc, start: int, end: int) -> tuple[I64, Interval | None]:
        """[4.6: mm/memory.c zap_pte_range, page_remove_rmap] clear every PTE of the range:
        the pages to release after the flush, and the span of the cleared entries."""
        addrs, entries = self.ranges.zap(proc.mm, start, end)
        if not addrs.size:
            return addrs, None
        pfns = self.normal_pages(entries)
        if pfns.size:
            frames = self.frames
            for member, count in enumerate(frames.rss_counts(pfns).tolist()):
                proc.rss[member] -= count
            np.subtract.at(frames.mapcount, pfns, 1)
        return pfns, (int(addrs[0]), int(addrs[-1]) + PAGE_SIZE)

    def _unmap_region(self, proc: Proc, cpu: int, pieces: list[Interval], floor: int,
                      ceiling: int) -> None:
        """[4.6: mm/mmap.c unmap_region; mm/memory.c unmap_vmas, free_pgtables] zap the
        pieces, free the tables nothing else needs (pieces less than a PMD apart in one
        call), flush what was cleared, then release the pages.  [Simplified: the flush
        covers the cleared entries only; 4.6's mmu_gather also widens it by freed
        tables.]"""
        gathered: list[I64] = []
        lo, hi = pt.TASK_SIZE_MAX, 0
        for start, end in pieces:
            pfns, span = self._zap(proc, start, end)
            gathered.append(pfns)
            if span is not None:
                lo, hi = min(lo, span[0]), max(hi, span[1])
        first = 0
        while first < len(pieces):
            last = first
            while (last + 1 < len(pieces)
                   and pieces[last + 1][0] <= pieces[last][1] + pt.PMD_SIZE):
                last += 1
            upper = pieces[last + 1][0] if last + 1 < len(pieces) else ceiling
            self.tables.free_pgtables(proc.mm, pieces[first][0], pieces[last][1], floor, upper)
            first = last + 1
        if lo < hi:
            self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(proc), lo, hi)
        if gathered:
            self.release(np.concatenate(gathered), cpu)

    def _unmap_replaced(self, proc: Proc, cpu: int, before: MmView, start: int,
                        end: int) -> None:
        """The do_munmap that MAP_FIXED and MREMAP_FIXED run on their target first."""
        old = coverage(before)
        pieces = intersect(old, [(start, end)])
        if pieces:
            floor, ceiling = neighbours(subtract(old, [(start, end)]), start, end)
            self._unmap_region(proc, cpu, pieces, floor, ceiling)

    def _reconcile(self, proc: Proc, cpu: int, before: MmView) -> None:
        """Unmap what the call left without a VMA, one unmap_region per hole it lies in.
        [Simplified: found by comparing the address space before and after the call
        (O(VMAs)); the contract does not say what a call unmapped.]"""
        after = coverage(proc.space.view())
        holes: dict[Interval, list[Interval]] = {}
        for piece in subtract(coverage(before), after):
            holes.setdefault(neighbours(after, *piece), []).append(piece)
        for (floor, ceiling), pieces in holes.items():
            self._unmap_region(proc, cpu, pieces, floor, ceiling)

    # -- views ------------------------------------------------------------------------------------

    def file_contents(self, inode: int, offset: int, n: int) -> bytes:
        node = self.inodes[inode]
        out = bytearray()
        pos, end = offset, min(offset + n, node.size)
        while pos < end:
            index, within = divmod(pos, PAGE_SIZE)
            chunk = min(PAGE_SIZE - within, end - pos)
            pfn = node.cache.get(index)
            if pfn is not None:
                out += self.frames.read(pfn, within, chunk)
            else:
                out += node.disk[pos:pos + chunk].ljust(chunk, b"\0")
            pos += chunk
        return bytes(out)

    def page_contents(self, pfn: int) -> bytes:
        if pfn == self.zero_pfn or self.frames.is_user(pfn):
            return self.frames.read(pfn, 0, PAGE_SIZE)
        return bytes(PAGE_SIZE)

    def view(self) -> KernelView:
        if self._view is None:
            self._view = self._build_view()
        return self._view

    def _build_view(self) -> KernelView:
        running = self.running
        procs = tuple(
            ProcessView(pid=p.pid, ppid=p.ppid, mm=p.mm, tlb_mm=p.mm + 1,
                        rss=(p.rss[0], p.rss[1], p.rss[2], p.rss[3]),
                        cpu=running.index(p.pid) if p.pid in running else -1,
                        files=tuple(sorted(p.files.items())),
                        oom=p.oom.view() if self.oom is not None else None)
            for _, p in sorted(self.procs.items()))
        inodes = tuple(InodeView(ident=n.ident, size=n.size, shmem=n.shmem,
                                 cache=tuple(sorted(n.cache.items())))
                       for _, n in sorted(self.inodes.items()))
        return KernelView(processes=procs, running=tuple(running), pages=self.frames.view(),
                          inodes=inodes, zero_pfn=self.zero_pfn,
                          stray=tuple(sorted(self.stray)),
                          oom=self.oom.view() if self.oom is not None else None,
                          committed=self.commit.pages if self.commit is not None else None)

    # -- the OOM killer (``fastmodel/oom_kernel.py``; -ENOSYS without Capability.OOM) ----------

    @_changes
    def set_oom_score_adj(self, pid: int, value: int) -> int:
        return ENOSYS if self.oom is None else self.oom.set_oom_score_adj(pid, value)

    @_changes
    def set_credentials(self, pid: int, cap_sys_admin: bool, cap_sys_resource: bool) -> int:
        return (ENOSYS if self.oom is None
                else self.oom.set_credentials(pid, cap_sys_admin, cap_sys_resource))

    def oom_score(self, pid: int) -> int:
        return ENOSYS if self.oom is None else self.oom.oom_score(pid)

    @_changes
    def oom_reap(self) -> int:
        return ENOSYS if self.oom is None else self.oom.reap()

    # -- machine-wide vm sysctls (-ENOSYS without Capability.OVERCOMMIT) ------------------------

    @_changes
    def set_sysctl(self, name: str, value: int) -> int:
        """[4.6: kernel/sysctl.c vm_table] written once into the machine's record, which
        every space reads (``refmodel.kernel.RefKernel.set_sysctl``)."""
        return ENOSYS if self.commit is None else write_sysctl(self.commit.sysctl, name, value)


def build(config: MachineConfig, parts: Mapping[str, Any] | None = None) -> FastKernel:
    """``specs.kernel.KernelFactory``: fastmodel's composition."""
    return FastKernel(config, parts)
