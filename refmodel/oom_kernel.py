"""The OOM killer inside the composed kernel: what ``refmodel/kernel.py`` adds to 4.6's pure
OOM functions (``refmodel/oom.py``) so that real processes run out of memory.

The kernel keeps one :class:`OomKiller`.  It builds the ``specs.oom.Task`` descriptors from
the processes, hands them to its policy object (``Oom46``, or a broken variant in a mutant)
and applies the decision: SIGKILL pending, TIF_MEMDIE, a place in the reaper's queue.  A kill
frees nothing by itself; memory comes back only when the victim exits or when the reaper
runs (``oom_reap``), so a test can see both halves.  Every call is logged as an
``specs.kernel.OomEvent`` with the descriptors it decided on, which is what the checkers
judge.  ``mm_populate`` (MAP_POPULATE) lives here too: it is the cheap way to fill memory.
[4.6: mm/oom_kill.c out_of_memory, pagefault_out_of_memory, wake_oom_reaper, oom_reaper,
__oom_reap_task; mm/page_alloc.c __alloc_pages_may_oom; fs/proc/base.c proc_oom_score,
oom_score_adj_write; mm/gup.c __mm_populate]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from refmodel import fault
from refmodel.oom import Oom46, alloc_may_oom
from specs import pte as pt
from specs.errno import Errno
from specs.kernel import VM_FAULT_ERROR, OomEvent, OomView, RssMember
from specs.oom import OOM_SCORE_ADJ_MIN, OomContext, OomResult, Task, Thread
from specs.pagetable import Level, MmView
from specs.vma import VM_EXEC, VM_IO, VM_LOCKED, VM_PFNMAP, VM_READ, VM_SHARED, VM_WRITE

if TYPE_CHECKING:
    from refmodel.fault import Page
    from refmodel.kernel import Process, RefKernel

ESRCH: Final = -Errno.ESRCH
PAGE_SIZE: Final = pt.PAGE_SIZE
#: the CPU the oom_reaper kernel thread runs on
REAPER_CPU: Final = 0  # [Simplified: always CPU 0]


class OomKiller:
    """The OOM side of one composed kernel: descriptors in, decisions applied, events logged."""

    def __init__(self, kernel: RefKernel, policy: Oom46) -> None:
        self.k = kernel
        self.policy = policy
        #: totalram_pages + total_swap_pages [4.6: mm/oom_kill.c constrained_alloc]
        self.totalpages = sum(zone.managed_pages for zone in kernel.pages.view().zones)
        self.events: list[OomEvent] = []
        #: oom_reaper_list, head first
        self.reap_queue: list[int] = []
        self.panic: str | None = None
        #: pid of current: the process on whose behalf the kernel runs (None: no process)
        self.current: int | None = None

    # -- descriptors ----------------------------------------------------------------------------

    def task(self, proc: Process, mms: dict[int, MmView] | None = None) -> Task:
        """The descriptor 4.6's OOM code reads for one process (one thread, its own mm;
        the children in fork order, which is ascending pid)."""
        table = (mms if mms is not None else self.k.tables.view().by_mm).get(proc.mm)
        state = proc.oom
        return Task(
            pid=proc.pid, threads=(Thread(tid=proc.pid, memdie=state.memdie),), mm=proc.mm,
            rss=(proc.rss[RssMember.MM_FILEPAGES] + proc.rss[RssMember.MM_ANONPAGES]
                 + proc.rss[RssMember.MM_SHMEMPAGES]),
            swapents=proc.rss[RssMember.MM_SWAPENTS],
            nr_ptes=table.nr_ptes if table is not None else 0,
            nr_pmds=table.nr_pmds if table is not None else 0,
            oom_score_adj=state.oom_score_adj, oom_score_adj_min=state.oom_score_adj_min,
            cap_sys_admin=state.cap_sys_admin, sigkill=state.sigkill,
            children=tuple(sorted(c.pid for c in self.k.procs.values() if c.ppid == proc.pid)))

    def tasks(self) -> tuple[Task, ...]:
        """Every process in for_each_process order (creation order: ascending pid)."""
        mms = self.k.tables.view().by_mm
        return tuple(self.task(proc, mms)
                     for proc in sorted(self.k.procs.values(), key=lambda p: p.pid))

    # -- the two callers of out_of_memory -------------------------------------------------------

    def alloc_failed(self, gfp_mask: int, order: int) -> None:
        """The page allocator found nothing (``FailPageAlloc.on_exhausted``): the OOM killer
        runs where __alloc_pages_may_oom would.  [Simplified: the allocation then fails
        instead of being retried, since the victim cannot exit inside one step.]"""
        current = self.k.procs.get(self.current) if self.current is not None else None
        if alloc_may_oom(gfp_mask, order, current is not None and current.oom.memdie):
            self.out_of_memory("alloc", gfp_mask, order)

    def pagefault(self) -> None:
        """A user-mode fault returned VM_FAULT_OOM [4.6: mm/oom_kill.c
        pagefault_out_of_memory; arch/x86/mm/fault.c mm_fault_error]."""
        self.out_of_memory("pagefault", 0, 0)

    def out_of_memory(self, trigger: str, gfp_mask: int, order: int) -> OomResult:
        """Decide on the current descriptors, apply the decision and log it."""
        current = self.current if self.current in self.k.procs else None
        ctx = OomContext(totalpages=self.totalpages,
                         current=(current, current) if current is not None else None)
        tasks = self.tasks()
        result = self.policy.out_of_memory(tasks, ctx)
        self.apply(result)
        self.events.append(OomEvent(trigger=trigger, gfp_mask=gfp_mask, order=order, ctx=ctx,
                                    tasks=tasks, result=result))
        return result

    def apply(self, result: OomResult) -> None:
        """SIGKILL to each process named, TIF_MEMDIE on the victim, the victim queued for
        the reaper when the kill says so; a panic is recorded (the model keeps running).
        [4.6: mm/oom_kill.c oom_kill_process, mark_oom_victim, wake_oom_reaper]"""
        if result.panic is not None and self.panic is None:
            self.panic = result.panic
        kill = result.kill
        if kill is None:
            return
        for pid in kill.sigkill:
            if pid in self.k.procs:
                self.k.procs[pid].oom.sigkill = True
        if kill.victim is None or kill.victim[0] not in self.k.procs:
            return
        self.k.procs[kill.victim[0]].oom.memdie = True
        if kill.reap and kill.victim[0] not in self.reap_queue:
            self.reap_queue.insert(0, kill.victim[0])

    # -- the reaper -----------------------------------------------------------------------------

    def reap(self) -> int:
        """The reaper takes the head of its queue: every VMA that is not VM_LOCKED and is
        anonymous or private loses its PTEs (the VMAs and tables stay), the TLBs are flushed
        and the pages released; then the victim's oom_score_adj is pinned at -1000 and its
        TIF_MEMDIE cleared.  A victim that already exited is simply dropped.  [4.6:
        mm/oom_kill.c oom_reaper, __oom_reap_task, exit_oom_victim] [Simplified: mmap_sem is
        always free, so the first attempt succeeds; no page is dirty, so ignore_dirty skips
        nothing]"""
        if not self.reap_queue:
            return 0
        pid = self.reap_queue.pop(0)
        proc = self.k.procs.get(pid)
        if proc is None:
            return pid
        gathered: list[Page] = []
        lo, hi = pt.TASK_SIZE_MAX, 0
        for vma in proc.space.view().vmas:
            if vma.flags & VM_LOCKED or (vma.file is not None and vma.flags & VM_SHARED):
                continue
            pages, first, last = self.k._zap(proc, vma.start, vma.end)
            gathered.extend(pages)
            if first < last:
                lo, hi = min(lo, first), max(hi, last)
        if lo < hi:
            self.k.tlb.flush_tlb_mm_range(REAPER_CPU, self.k.tlb_mm(proc), lo, hi)
        for page in gathered:
            self.k.put_page(page, REAPER_CPU)
        proc.oom.oom_score_adj = OOM_SCORE_ADJ_MIN
        proc.oom.memdie = False
        proc.oom.reaped = True
        return pid

    # -- /proc ----------------------------------------------------------------------------------

    def set_oom_score_adj(self, pid: int, value: int) -> int:
        """The process writes its own oom_score_adj, with its own CAP_SYS_RESOURCE
        [4.6: fs/proc/base.c oom_score_adj_write]."""
        proc = self.k.procs.get(pid)
        if proc is None:
            return ESRCH
        result, after = self.policy.oom_score_adj_write(self.task(proc), value,
                                                         proc.oom.cap_sys_resource)
        if result == 0:
            proc.oom.oom_score_adj = after.oom_score_adj
            proc.oom.oom_score_adj_min = after.oom_score_adj_min
        return result

    def set_credentials(self, pid: int, cap_sys_admin: bool, cap_sys_resource: bool) -> int:
        """[Simplified: credentials are just the two capabilities the OOM code tests]"""
        proc = self.k.procs.get(pid)
        if proc is None:
            return ESRCH
        proc.oom.cap_sys_admin = bool(cap_sys_admin)
        proc.oom.cap_sys_resource = bool(cap_sys_resource)
        return 0

    def oom_score(self, pid: int) -> int:
        """[4.6: fs/proc/base.c proc_oom_score]."""
        proc = self.k.procs.get(pid)
        if proc is None:
            return ESRCH
        return self.policy.oom_score(self.task(proc), self.totalpages)

    def view(self) -> OomView:
        return OomView(totalpages=self.totalpages, events=tuple(self.events),
                       reap_queue=tuple(self.reap_queue), panic=self.panic)


# -- MAP_POPULATE [4.6: mm/gup.c __mm_populate, populate_vma_page_range, __get_user_pages,
#    faultin_page] ------------------------------------------------------------------------------


def mm_populate(k: RefKernel, proc: Process, cpu: int, start: int, length: int) -> None:
    """Fault in [start, start + length) VMA by VMA, ignoring errors as mmap's populate
    does: a VMA that fails part-way is retried from the failing page once (4.6 returns the
    pages done, then the next call fails at once) and then left.  VM_IO and VM_PFNMAP VMAs
    are skipped.  No TLB is touched: gup walks the tables itself.  [4.6: mm/gup.c
    __mm_populate]"""
    end = start + length
    nstart = start
    while nstart < end:
        vma = proc.space.find_vma(nstart)
        if vma is None or vma.start >= end:
            return
        nend = min(end, vma.end)
        if not vma.flags & (VM_IO | VM_PFNMAP):
            nstart = max(nstart, vma.start)
            done = populate_vma_page_range(k, proc, cpu, nstart, nend)
            if done > 0:
                nend = nstart + done * PAGE_SIZE
        nstart = nend


def populate_vma_page_range(k: RefKernel, proc: Process, cpu: int, start: int,
                            end: int) -> int:
    """get_user_pages over one VMA's piece: a write fault for a private writable VMA
    (FOLL_WRITE), a read fault otherwise; a page already mapped well enough is skipped.
    The pages done before the first failure, or a negative errno when the very first page
    fails (-EFAULT for a VMA with no access at all, -ERESTARTSYS-like -EINTR once a fatal
    signal is pending, -ENOMEM for VM_FAULT_OOM).  [4.6: mm/gup.c populate_vma_page_range,
    __get_user_pages, check_vma_flags, faultin_page]"""
    vma = proc.space.find_vma(start)
    if vma is None:
        return -Errno.EFAULT
    write = vma.flags & (VM_WRITE | VM_SHARED) == VM_WRITE
    if not vma.flags & (VM_READ | VM_WRITE | VM_EXEC):
        return -Errno.EFAULT  # check_vma_flags: no FOLL_FORCE without any access
    done = 0
    for addr in range(start, end, PAGE_SIZE):
        if proc.oom.sigkill:
            return done or -Errno.EINTR  # fatal_signal_pending: the task is dying
        level, entry = k.tables.walk(proc.mm, addr)
        if level == Level.PTE and pt.pte_present(entry) and (pt.pte_write(entry) or not write):
            done += 1
            continue
        now = proc.space.find_vma(addr) if proc.space.touch(addr, write) == 0 else None
        failed = now is None or bool(fault.handle_mm_fault(k, proc, cpu, now, addr, write)
                                     & VM_FAULT_ERROR)
        if failed:
            return done or -Errno.ENOMEM
        done += 1
    return done
