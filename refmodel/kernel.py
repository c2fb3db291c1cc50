"""The composed reference kernel: processes on CPUs over the buddy allocator, the page
tables, the TLBs and one address space per mm.  Satisfies ``specs.kernel.Kernel``.

Each part is reached only through its contract, so any part can be swapped for another
implementation (``RefKernel(config, {"pagetable": FastPageTables})``).  What the kernel adds
lives here and in ``refmodel/fault.py`` (faults, COW) and ``refmodel/fork.py`` (fork): page
contents, the page cache, the zero page, mapcounts, refcounts and RSS counters, and the
PTE side of the address-space system calls (zapping, freeing tables, moving and
re-protecting PTEs, flushing TLBs) [4.6: mm/mmap.c unmap_region, exit_mmap; mm/memory.c
unmap_vmas, zap_pte_range, free_pgtables; mm/mprotect.c; mm/mremap.c move_page_tables;
kernel/fork.c; kernel/exit.c exit_mm].
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs

from refmodel import fault
from refmodel.buddy import RefBuddy
from refmodel.fail_page_alloc import FailPageAlloc
from refmodel.fault import Inode, Page
from refmodel.fork import can_dup, copy_page_range, dup_address_space
from refmodel.oom import OOM46, Oom46
from refmodel.oom_kernel import OomKiller, mm_populate
from refmodel.pagetable import RefPageTables
from refmodel.tlb import RefTlb
from refmodel.vma import RefAddressSpace
from refmodel.vma_madvise import dontneed_pieces
from specs import gfp
from specs import pte as pt
from specs.buddy import Capability as BuddyCapability
from specs.buddy import PageAllocator
from specs.errno import Errno
from specs.kernel import (
    RSS_OF,
    SI_KERNEL,
    SIGKILL,
    SIGSEGV,
    VM_FAULT_OOM,
    Capability,
    FaultResult,
    InodeView,
    KernelView,
    OomTask,
    PageKind,
    PageView,
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
#: what a system call made on behalf of a process with SIGKILL pending returns (it never
#: makes one: it dies on its way back to user mode)
EINTR: Final = -Errno.EINTR  # [Simplified: such a call is refused outright]
PAGE_SIZE: Final = pt.PAGE_SIZE
#: How often one access may fault before the kernel gives up on its parts: a handled fault
#: always makes the retried access succeed in 4.6, so a third fault means a part misbehaves.
MAX_FAULTS_PER_ACCESS: Final = 3

#: what the zero page is allocated with at boot
GFP_ZERO_PAGE: Final = gfp.GFP_KERNEL | gfp.__GFP_ZERO

Interval = tuple[int, int]


@attrs.define(eq=False)
class Process:
    """A task and its mm (fork without CLONE_VM: one task per mm)."""

    pid: int
    ppid: int
    #: the page-table mm id
    mm: int
    space: AddressSpace
    #: address-space file ident -> kernel inode id
    files: dict[int, int] = attrs.Factory(dict)
    #: get_mm_counter per RssMember [4.6: mm_struct rss_stat]
    rss: list[int] = attrs.Factory(lambda: [0, 0, 0, 0])
    #: oom_score_adj, credentials, SIGKILL and TIF_MEMDIE (``refmodel/oom_kernel.py``)
    oom: OomTask = attrs.Factory(OomTask)


class RefKernel:
    """The reference composition; ``parts`` maps buddy/pagetable/tlb/vma to factories used
    instead of refmodel's.  ``oom=False`` builds the kernel without the OOM killer (no
    Capability.OOM), as a kernel that does not implement it behaves."""

    #: the OOM decisions (a mutant swaps in a broken variant) and the glue that applies them
    oom_policy: Oom46 = OOM46
    oom_killer: type[OomKiller] = OomKiller

    def __init__(self, config: MachineConfig,
                 parts: Mapping[str, PartFactory] | None = None, *, oom: bool = True) -> None:
        chosen = dict(parts or {})
        self.config = config
        buddy: PageAllocator = chosen.get("buddy", RefBuddy)(config)  # type: ignore[assignment]
        #: every part allocates through the injector, so a failure can hit any allocation
        self.pages = FailPageAlloc(buddy)
        self.tables: PageTables = chosen.get("pagetable", RefPageTables)(  # type: ignore[assignment]
            config, self.pages)
        self.tlb: Tlb = chosen.get("tlb", RefTlb)(config, self)  # type: ignore[assignment]
        self._new_space: PartFactory = chosen.get("vma", RefAddressSpace)
        self.refcounted = BuddyCapability.REFCOUNT in self.pages.capabilities
        zero = self.pages.alloc_pages(GFP_ZERO_PAGE, 0)
        if zero is None:
            raise ValueError(f"machine {config.name} has no page for the zero page")
        self.zero_pfn: int = zero
        #: empty_zero_page [4.6: arch/x86/kernel/head_64.S].  [Simplified: taken from the page
        #: allocator at boot (and never freed) rather than lying in the kernel image.]
        self.zero_page = Page(pfn=zero, kind=PageKind.ANON)
        self.procs: dict[int, Process] = {}
        self.running: list[int] = [-1] * config.nr_cpus
        self.user_pages: dict[int, Page] = {}
        self.inodes: dict[int, Inode] = {}
        #: pfns a user access reached that hold no user page (a stale TLB entry at work)
        self.stray: set[int] = set()
        self.next_pid = 1
        self.next_inode = 1
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
        """What exit_mmap gives back to the machine's counter: every charge the mm made."""
        if self.commit is not None:
            space.exit_mmap()  # type: ignore[attr-defined]

    def fail_page_alloc(self, times: int, space: int = 0) -> int:
        """Arm page-allocation fault injection (``refmodel/fail_page_alloc.py``)."""
        return self.pages.arm(times, space)

    # -- the TranslationSource the TLB walks ----------------------------------------------------

    def lookup(self, mm: int, vaddr: int) -> int:
        """The leaf entry of (TLB mm id) ``mm`` at vaddr, 0 when none."""
        level, value = self.tables.walk(mm - 1, vaddr) if mm > 0 else (0, 0)
        return value if level == Level.PTE else 0

    def mark(self, mm: int, vaddr: int, bits: int) -> None:
        """The MMU setting ACCESSED/DIRTY in the leaf entry it walked."""
        value = self.lookup(mm, vaddr)
        if value:
            self.tables.set_pte_at(mm - 1, vaddr, value | bits)

    # -- pages ----------------------------------------------------------------------------------

    def alloc_user_page(self, kind: PageKind, gfp_mask: int, cpu: int) -> Page | None:
        """One order-0 page for user data, holding the allocation's reference."""
        pfn = self.pages.alloc_pages(gfp_mask, 0, cpu)
        if pfn is None:
            return None
        page = Page(pfn=pfn, kind=kind)
        self.user_pages[pfn] = page
        return page

    def get_page(self, page: Page) -> None:
        """[4.6: include/linux/mm.h get_page]."""
        page.refcount += 1
        if self.refcounted:
            self.pages.get_page(page.pfn)

    def put_page(self, page: Page, cpu: int = 0) -> None:
        """[4.6: include/linux/mm.h put_page] the last reference frees the page."""
        page.refcount -= 1
        if self.refcounted:
            self.pages.put_page(page.pfn, cpu)
        elif page.refcount == 0:
            self.pages.free_pages(page.pfn, 0, cpu)
        if page.refcount == 0:
            del self.user_pages[page.pfn]

    def normal_page(self, entry: int) -> Page | None:
        """[4.6: mm/memory.c vm_normal_page] None for a special PTE (the zero page)."""
        if pt.pte_special(entry):
            return None
        return self.user_pages.get(pt.pte_pfn(entry))

    def inode_of(self, proc: Process, ident: int) -> Inode:
        """The kernel inode behind one of proc's address-space files."""
        return self.inodes[proc.files[ident]]

    def tlb_mm(self, proc: Process) -> int:
        """The TLB's id for proc's mm (the TLB reserves 0 for init_mm)."""
        return proc.mm + 1

    def present_ptes(self, mm: int, start: int, end: int) -> Iterator[tuple[int, int]]:
        """(addr, entry) of every non-none PTE in [start, end), skipping the span of every
        empty upper-level entry as 4.6's p?d_none_or_clear_bad loops do."""
        addr = start & pt.PAGE_MASK
        while addr < end:
            level, value = self.tables.walk(mm, addr)
            if level < 0:
                return
            if level == Level.PTE:
                if value:
                    yield addr, value
                addr += PAGE_SIZE
            else:
                span = 1 << (pt.PAGE_SHIFT + 9 * (level - 1))
                addr = (addr // span + 1) * span

    # -- processes and CPUs ---------------------------------------------------------------------

    def _cpu_of(self, proc: Process) -> int:
        """The CPU a process's system calls run on: its own, else CPU 0.  [Simplified: a
        process that is not running makes its calls from CPU 0 without being switched in.]"""
        return self.running.index(proc.pid) if proc.pid in self.running else 0

    def spawn(self) -> int:
        """A freshly exec'd process: an address space with its stack, an empty PGD
        [4.6: fs/exec.c bprm_mm_init; kernel/fork.c mm_alloc]."""
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
            # the exec-time stack was refused its charge: exec fails and its mm goes
            # [4.6: fs/exec.c __bprm_mm_init, setup_arg_pages; kernel/fork.c mmput].
            # [Simplified: -ENOMEM also where 4.6's setup_arg_pages answers -EFAULT.]
            self.commit.pages = committed
            self.tables.mm_teardown(mm)
            return ENOMEM
        proc = Process(pid=self.next_pid, ppid=0, mm=mm, space=space)
        self.procs[proc.pid] = proc
        self.next_pid += 1
        return proc.pid

    def fork(self, pid: int) -> int:
        """[4.6: kernel/fork.c copy_mm, dup_mm, dup_mmap] the child's pid or -ENOMEM; a
        failed fork tears the half-built child down as mmput would."""
        parent = self.procs.get(pid)
        if parent is None:
            return ESRCH
        if self._dying(parent):
            return EINTR
        if Capability.FORK not in self.capabilities:
            return ENOSYS
        cpu = self._cpu_of(parent)
        space = dup_address_space(parent.space)
        if isinstance(space, int):
            return space
        mm = self.tables.mm_alloc()
        if mm is None:
            self._release(space)
            return ENOMEM
        child = Process(pid=self.next_pid, ppid=pid, mm=mm, space=space,
                        files=dict(parent.files), oom=parent.oom.inherit())
        failed = 0
        for vma in parent.space.view().vmas:
            if vma.flags & VM_DONTCOPY:  # the child has no such VMA [4.6: dup_mmap]
                continue
            failed = copy_page_range(self, child, parent, vma.start, vma.end, vma.flags,
                                     vma.anon_vma)
            if failed:
                break
        # the parent lost RW on its COW PTEs [4.6: kernel/fork.c dup_mmap flush_tlb_mm]
        self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(parent), 0, TLB_FLUSH_ALL)
        if failed:
            self._exit_mmap(child, cpu)
            return failed
        self.procs[child.pid] = child
        self.next_pid += 1
        return child.pid

    def exit(self, pid: int) -> int:
        """[4.6: kernel/exit.c exit_mm; kernel/fork.c mmput; mm/mmap.c exit_mmap] the CPU
        goes idle (lazy on the dying mm), every PTE is zapped, the TLBs are flushed, then
        the pages and tables are freed.  [Simplified: the PGD is freed at exit, after the
        flush made every lazy CPU leave the mm, not at the last mmdrop.]"""
        proc = self.procs.get(pid)
        if proc is None:
            return ESRCH
        cpu = self._cpu_of(proc)
        if proc.pid in self.running:
            self.tlb.enter_lazy_tlb(cpu)
            self.running[cpu] = -1
        self._exit_mmap(proc, cpu)
        del self.procs[pid]
        return 0

    def _exit_mmap(self, proc: Process, cpu: int) -> None:
        gathered: list[Page] = []
        for vma in proc.space.view().vmas:
            gathered.extend(self._zap(proc, vma.start, vma.end)[0])
        self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(proc), 0, TLB_FLUSH_ALL)
        for page in gathered:
            self.put_page(page, cpu)
        self.tables.mm_teardown(proc.mm)
        self._release(proc.space)

    def switch(self, cpu: int, pid: int) -> int:
        """Run pid on cpu, or the idle kernel thread for pid -1 [4.6: kernel/sched/core.c
        context_switch].  -EINVAL for a bad CPU, -ESRCH for no such process, -EBUSY when
        it runs on another CPU (the model does not migrate tasks)."""
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

    # -- user accesses --------------------------------------------------------------------------

    def _current(self, cpu: int) -> Process | None:
        if not 0 <= cpu < self.config.nr_cpus or self.running[cpu] == -1:
            return None
        return self.procs[self.running[cpu]]

    def _caller(self, pid: int) -> Process | int:
        """The process a system call runs as: -ESRCH for none, -EINTR once it has SIGKILL
        pending (it entered the kernel and becomes current either way)."""
        proc = self.procs.get(pid)
        if proc is None:
            return ESRCH
        return EINTR if self._dying(proc) else proc

    def _dying(self, proc: Process) -> bool:
        """Enter the kernel on proc's behalf: proc becomes current, and True means it has
        SIGKILL pending, so it never runs user code (or makes a call) again and the
        operation changes nothing (``specs/oom.md``, "A killed process")."""
        if self.oom is None:
            return False
        self.oom.current = proc.pid
        return proc.oom.sigkill

    def _killed(self, addr: int) -> FaultResult:
        """What a user access by a dying process returns: the SIGKILL it dies of."""
        return FaultResult(signal=SIGKILL, si_code=SI_KERNEL, addr=addr)

    def _user_fault(self, failed: FaultResult | None) -> FaultResult | None:
        """A user-mode access that ended in VM_FAULT_OOM runs pagefault_out_of_memory; the
        access is then reported as before (4.6 retries it, or the task dies).  [4.6:
        arch/x86/mm/fault.c mm_fault_error]"""
        if failed is not None and failed.vm_fault & VM_FAULT_OOM and self.oom is not None:
            self.oom.pagefault()
        return failed

    def _access(self, proc: Process, cpu: int, addr: int, write: bool) -> int | FaultResult:
        """The pfn one access reaches, faulting as needed."""
        if not tlb_canonical(addr):
            return FaultResult(signal=SIGSEGV, si_code=SI_KERNEL, addr=0)  # #GP
        for _attempt in range(MAX_FAULTS_PER_ACCESS):
            result = self.tlb.access(cpu, addr, write)
            if isinstance(result, int):
                return FaultResult(signal=SIGSEGV, si_code=SI_KERNEL, addr=0)
            if result.outcome in (Outcome.HIT, Outcome.FILL):
                return result.pfn
            if result.outcome is Outcome.GENERAL_PROTECTION:
                return FaultResult(signal=SIGSEGV, si_code=SI_KERNEL, addr=0)
            failed = fault.do_page_fault(self, proc, cpu, addr, write, result.error_code)
            if failed is not None:
                return failed
        raise RuntimeError(f"access to {addr:#x} still faults after {MAX_FAULTS_PER_ACCESS} "
                           "handled faults: a part breaks the fault path")

    def _frame(self, pfn: int) -> Page | None:
        if pfn == self.zero_pfn:
            return self.zero_page
        page = self.user_pages.get(pfn)
        if page is None:
            self.stray.add(pfn)
        return page

    def _transfer(self, proc: Process, cpu: int, addr: int, n: int, data: bytes | None,
                  out: bytearray) -> FaultResult | None:
        """Page by page: read n bytes into out, or write data; stop at the first fault."""
        done = 0
        while done < n:
            pos = addr + done
            pfn = self._access(proc, cpu, pos, data is not None)
            if isinstance(pfn, FaultResult):
                return attrs.evolve(pfn, done=done)
            offset = pos % PAGE_SIZE
            chunk = min(PAGE_SIZE - offset, n - done)
            page = self._frame(pfn)
            if data is not None:
                if page is not None:
                    page.write(offset, data[done:done + chunk])
            else:
                out[done:done + chunk] = (page.read(offset, chunk) if page is not None
                                          else bytes(chunk))
            done += chunk
        return None

    def read(self, cpu: int, addr: int, n: int) -> bytes | FaultResult | int:
        proc = self._current(cpu)
        if proc is None or n < 0 or addr < 0:
            return EINVAL
        if self._dying(proc):
            return self._killed(addr)
        out = bytearray(n)
        failed = self._user_fault(self._transfer(proc, cpu, addr, n, None, out))
        return failed if failed is not None else bytes(out)

    def write(self, cpu: int, addr: int, data: bytes) -> int | FaultResult:
        proc = self._current(cpu)
        if proc is None or addr < 0:
            return EINVAL
        if self._dying(proc):
            return self._killed(addr)
        failed = self._user_fault(self._transfer(proc, cpu, addr, len(data), bytes(data),
                                                 bytearray()))
        return failed if failed is not None else len(data)

    @staticmethod
    def access_ok(addr: int, n: int) -> bool:
        """[4.6: arch/x86/include/asm/uaccess.h access_ok, __chk_range_not_ok] under USER_DS."""
        return 0 <= addr and addr + n <= pt.TASK_SIZE_MAX

    def copy_from_user(self, cpu: int, addr: int, n: int) -> tuple[int, bytes] | int:
        """[4.6: arch/x86/lib/usercopy_64.c copy_user_handle_tail] the prefix before the
        first page that cannot be read is copied; the rest of the buffer is zeroed."""
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

    def copy_to_user(self, cpu: int, addr: int, data: bytes) -> int:
        """Kernel-mode stores: COW breaks as for a user write (CR0.WP); a fault stops the copy
        and the uncopied count is returned [4.6: arch/x86/include/asm/uaccess_64.h
        copy_to_user]."""
        proc = self._current(cpu)
        if proc is None:
            return EINVAL
        if not self.access_ok(addr, len(data)) or self._dying(proc):
            return len(data)
        failed = self._transfer(proc, cpu, addr, len(data), bytes(data), bytearray())
        return 0 if failed is None else len(data) - failed.done

    # -- address-space system calls -------------------------------------------------------------

    def space(self, pid: int) -> AddressSpace:
        return self.procs[pid].space

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
        inode = Inode(ident=self.next_inode, size=size, shmem=shmem, disk=disk)
        self.inodes[inode.ident] = inode
        self.next_inode += 1
        return inode.ident

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
                size = next(f.size for f in proc.space.view().files if f.ident == vma.file)
                proc.files[vma.file] = self._new_inode(size, shmem=True)
            if vma is not None and (vma.flags & VM_LOCKED or flags & (MAP_POPULATE | MAP_NONBLOCK)
                                    == MAP_POPULATE):
                # [4.6: mm/mmap.c do_mmap (*populate); mm/util.c vm_mmap_pgoff mm_populate]
                mm_populate(self, proc, cpu, result, page_align(length))
        return result

    def munmap(self, pid: int, addr: int, length: int) -> int:
        return self._forward(pid, "munmap", addr, length)

    def brk(self, pid: int, addr: int) -> int:
        return self._forward(pid, "brk", addr)

    def _forward(self, pid: int, call: str, *args: int) -> int:
        """A call whose PTE side is only the unmapping of what it removed."""
        proc = self._caller(pid)
        if isinstance(proc, int):
            return proc
        before = proc.space.view()
        result: int = getattr(proc.space, call)(*args)
        self._reconcile(proc, self._cpu_of(proc), before)
        return result

    def mprotect(self, pid: int, addr: int, length: int, prot: int) -> int:
        """[4.6: mm/mprotect.c sys_mprotect, mprotect_fixup, change_protection] each old VMA
        piece in the range whose flags changed gets the new vm_page_prot in its PTEs, and a
        range flush if any changed.  The pieces are the VMAs *before* the call: a piece that
        merged into an unchanged neighbour still changed."""
        proc = self._caller(pid)
        if isinstance(proc, int):
            return proc
        before = proc.space.view()
        result = proc.space.mprotect(addr, length, prot)
        if result not in (0, ENOMEM):
            return result
        cpu = self._cpu_of(proc)
        start, end = addr, addr + page_align(length)
        for old in before.vmas:
            lo, hi = max(old.start, start), min(old.end, end)
            vma = proc.space.find_vma(lo) if lo < hi else None
            if vma is None or vma.start > lo or vma.flags == old.flags:
                continue
            changed = self.tables.change_protection(proc.mm, lo, hi,
                                                    fault.vm_page_prot(self, proc, vma))
            if changed > 0:
                self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(proc), lo, hi, vma.flags)
        return result

    def mremap(self, pid: int, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        """[4.6: mm/mremap.c mremap_to, move_vma, move_page_tables, move_ptes] a fixed target
        is unmapped first; a move carries the PTEs over and flushes the old range."""
        proc = self._caller(pid)
        if isinstance(proc, int):
            return proc
        before = proc.space.view()
        result = proc.space.mremap(old_addr, old_len, new_len, flags, new_addr)
        cpu = self._cpu_of(proc)
        if result >= 0 and flags & MREMAP_FIXED:
            self._unmap_replaced(proc, cpu, before, result, result + page_align(new_len))
        if result >= 0 and result != old_addr:
            self._move_ptes(proc, cpu, old_addr, result, min(page_align(old_len),
                                                             page_align(new_len)))
        self._reconcile(proc, cpu, before)
        return result

    def madvise(self, pid: int, addr: int, length: int, advice: int) -> int:
        """[4.6: mm/madvise.c sys_madvise, madvise_dontneed; mm/memory.c zap_page_range] the
        space decides; MADV_DONTNEED then zaps each accepted piece on its own, as 4.6 calls
        zap_page_range per VMA: clear its PTEs, flush what was cleared, release the pages.
        No page table is freed.  The pieces are read off the VMAs before the call, which
        DONTNEED does not change."""
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
                self._zap_page_range(proc, cpu, start, end)
        return result

    def _zap_page_range(self, proc: Process, cpu: int, start: int, end: int) -> None:
        """[4.6: mm/memory.c zap_page_range] one mmu_gather: zap, flush the cleared span,
        then put the pages."""
        pages, lo, hi = self._zap(proc, start, end)
        if lo < hi:
            self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(proc), lo, hi)
        for page in pages:
            self.put_page(page, cpu)

    def _move_ptes(self, proc: Process, cpu: int, old: int, new: int, length: int) -> None:
        """[Simplified: a table allocation failure stops the move; the PTEs left behind are
        zapped with the old range instead of the whole move being undone.]"""
        moved = False
        for addr, entry in list(self.present_ptes(proc.mm, old, old + length)):
            target = new + (addr - old)
            if self.tables.pte_alloc(proc.mm, target):
                break
            self.tables.ptep_get_and_clear(proc.mm, addr)
            self.tables.set_pte_at(proc.mm, target, pt.pte_mksoft_dirty(entry))
            moved = True
        if moved:
            self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(proc), old, old + length)

    # -- unmapping ------------------------------------------------------------------------------

    def _zap(self, proc: Process, start: int, end: int) -> tuple[list[Page], int, int]:
        """Clear every PTE of [start, end); the pages to release after the flush and the
        span cleared [4.6: mm/memory.c zap_pte_range, page_remove_rmap]."""
        gathered: list[Page] = []
        lo, hi = end, start
        for addr, entry in list(self.present_ptes(proc.mm, start, end)):
            self.tables.ptep_get_and_clear(proc.mm, addr)
            lo, hi = min(lo, addr), max(hi, addr + PAGE_SIZE)
            page = self.normal_page(entry)
            if page is not None:
                proc.rss[RSS_OF[page.kind]] -= 1
                page.mapcount -= 1
                gathered.append(page)
        return gathered, lo, hi

    def _unmap_region(self, proc: Process, cpu: int, ranges: list[Interval], floor: int,
                      ceiling: int) -> None:
        """[4.6: mm/mmap.c unmap_region; mm/memory.c free_pgtables] zap, free the tables the
        neighbours do not need (detached pieces less than a PMD apart share a call), flush
        the cleared span, then release the pages.  [Simplified: the flush covers the cleared
        PTEs only; 4.6's mmu_gather also widens it by the tables freed.]"""
        gathered: list[Page] = []
        lo, hi = pt.TASK_SIZE_MAX, 0
        for start, end in ranges:
            pages, first, last = self._zap(proc, start, end)
            gathered.extend(pages)
            if pages or first < last:
                lo, hi = min(lo, first), max(hi, last)
        i = 0
        while i < len(ranges):
            j = i
            while j + 1 < len(ranges) and ranges[j + 1][0] <= ranges[j][1] + pt.PMD_SIZE:
                j += 1
            upper = ranges[j + 1][0] if j + 1 < len(ranges) else ceiling
            self.tables.free_pgtables(proc.mm, ranges[i][0], ranges[j][1], floor, upper)
            i = j + 1
        if lo < hi:
            self.tlb.flush_tlb_mm_range(cpu, self.tlb_mm(proc), lo, hi)
        for page in gathered:
            self.put_page(page, cpu)

    def _unmap_replaced(self, proc: Process, cpu: int, before: MmView, start: int,
                        end: int) -> None:
        """The do_munmap a MAP_FIXED mmap or MREMAP_FIXED runs on its target first."""
        old = _coverage(before)
        pieces = _intersect(old, [(start, end)])
        if pieces:
            rest = _subtract(old, [(start, end)])
            floor, ceiling = _neighbours(rest, start, end)
            self._unmap_region(proc, cpu, pieces, floor, ceiling)

    def _reconcile(self, proc: Process, cpu: int, before: MmView) -> None:
        """Unmap what the call left without a VMA, one unmap_region per gap it now lies in.
        [Simplified: the address space is compared before and after the call (O(VMAs)), since
        the contract does not report what a call unmapped.]"""
        after = _coverage(proc.space.view())
        gone = _subtract(_coverage(before), after)
        groups: dict[Interval, list[Interval]] = {}
        for piece in gone:
            groups.setdefault(_neighbours(after, *piece), []).append(piece)
        for (floor, ceiling), pieces in groups.items():
            self._unmap_region(proc, cpu, pieces, floor, ceiling)

    # -- views ----------------------------------------------------------------------------------

    def file_contents(self, inode: int, offset: int, n: int) -> bytes:
        node = self.inodes[inode]
        out = bytearray()
        pos, end = offset, min(offset + n, node.size)
        while pos < end:
            index, within = divmod(pos, PAGE_SIZE)
            chunk = min(PAGE_SIZE - within, end - pos)
            page = node.cache.get(index)
            if page is not None:
                out += page.read(within, chunk)
            else:
                out += node.disk[pos:pos + chunk].ljust(chunk, b"\0")
            pos += chunk
        return bytes(out)

    def page_contents(self, pfn: int) -> bytes:
        page = self.zero_page if pfn == self.zero_pfn else self.user_pages.get(pfn)
        return bytes(PAGE_SIZE) if page is None else page.read(0, PAGE_SIZE)

    def view(self) -> KernelView:
        procs = tuple(
            ProcessView(pid=p.pid, ppid=p.ppid, mm=p.mm, tlb_mm=self.tlb_mm(p),
                        rss=(p.rss[0], p.rss[1], p.rss[2], p.rss[3]),
                        cpu=self.running.index(p.pid) if p.pid in self.running else -1,
                        files=tuple(sorted(p.files.items())),
                        oom=p.oom.view() if self.oom is not None else None)
            for p in sorted(self.procs.values(), key=lambda p: p.pid))
        pages = tuple(
            PageView(pfn=pg.pfn, kind=pg.kind, refcount=pg.refcount, mapcount=pg.mapcount,
                     index=pg.index, inode=pg.inode, cached=pg.cached)
            for pg in sorted(self.user_pages.values(), key=lambda pg: pg.pfn))
        inodes = tuple(
            InodeView(ident=n.ident, size=n.size, shmem=n.shmem,
                      cache=tuple(sorted((i, pg.pfn) for i, pg in n.cache.items())))
            for n in sorted(self.inodes.values(), key=lambda n: n.ident))
        return KernelView(processes=procs, running=tuple(self.running), pages=pages,
                          inodes=inodes, zero_pfn=self.zero_pfn,
                          stray=tuple(sorted(self.stray)),
                          oom=self.oom.view() if self.oom is not None else None,
                          committed=self.commit.pages if self.commit is not None else None)

    # -- the OOM killer (``refmodel/oom_kernel.py``; -ENOSYS without Capability.OOM) -----------

    def set_oom_score_adj(self, pid: int, value: int) -> int:
        return ENOSYS if self.oom is None else self.oom.set_oom_score_adj(pid, value)

    def set_credentials(self, pid: int, cap_sys_admin: bool, cap_sys_resource: bool) -> int:
        return (ENOSYS if self.oom is None
                else self.oom.set_credentials(pid, cap_sys_admin, cap_sys_resource))

    def oom_score(self, pid: int) -> int:
        return ENOSYS if self.oom is None else self.oom.oom_score(pid)

    def oom_reap(self) -> int:
        return ENOSYS if self.oom is None else self.oom.reap()

    # -- machine-wide vm sysctls (-ENOSYS without Capability.OVERCOMMIT) ------------------------

    def set_sysctl(self, name: str, value: int) -> int:
        """[4.6: kernel/sysctl.c vm_table] the sysctls are global: written once into the
        machine's record, every space (live or created later) runs under them."""
        return ENOSYS if self.commit is None else write_sysctl(self.commit.sysctl, name, value)


# -- interval arithmetic over the address space's coverage ---------------------------------------


def _coverage(view: MmView) -> list[Interval]:
    """The mapped ranges, adjacent VMAs joined."""
    out: list[Interval] = []
    for vma in view.vmas:
        if out and out[-1][1] == vma.start:
            out[-1] = (out[-1][0], vma.end)
        else:
            out.append((vma.start, vma.end))
    return out


def _subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """a minus b, both sorted and disjoint."""
    out: list[Interval] = []
    for start, end in a:
        pos = start
        for bs, be in b:
            if be <= pos or bs >= end:
                continue
            if bs > pos:
                out.append((pos, bs))
            pos = max(pos, be)
        if pos < end:
            out.append((pos, end))
    return out


def _intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """a and b, both sorted and disjoint."""
    return [(max(s, bs), min(e, be)) for s, e in a for bs, be in b
            if max(s, bs) < min(e, be)]


def _neighbours(mapped: list[Interval], start: int, end: int) -> Interval:
    """(floor, ceiling) for free_pgtables: the end of the mapping below start (or
    FIRST_USER_ADDRESS) and the start of the one above end (or USER_PGTABLES_CEILING)."""
    i = bisect.bisect_right(mapped, (start, pt.ENTRY_MASK))
    floor = mapped[i - 1][1] if i and mapped[i - 1][1] <= start else pt.FIRST_USER_ADDRESS
    j = bisect.bisect_left(mapped, (end, 0))
    ceiling = mapped[j][0] if j < len(mapped) else pt.USER_PGTABLES_CEILING
    return floor, ceiling


def build(config: MachineConfig, parts: Mapping[str, Any] | None = None) -> RefKernel:
    """``specs.kernel.KernelFactory``: the reference composition."""
    return RefKernel(config, parts)
