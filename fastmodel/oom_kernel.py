"""The OOM killer inside fastmodel's composed kernel (``fastmodel/kernel.py``): the glue
between real processes and 4.6's OOM decisions (``fastmodel.oom.FastOom``).

Observably identical to the reference kernel's OOM side: the same descriptors are built in
the same order (ascending pid, children in fork order), the decision is applied before the
call is logged as an ``specs.kernel.OomEvent``, the reaper's queue is pushed at its head,
and the reaper zaps the victim's private memory, flushes the cleared span once and only
then releases the pages, all on CPU 0.  What differs is how: the children of every process
come from one pass over the processes, and the reaper clears PTEs a table at a time and
releases the pages as one array (``FastKernel._zap`` and ``FastKernel.release``), so the
reap of a 64 MiB victim costs array work rather than a Python loop per page.
[4.6: mm/oom_kill.c out_of_memory, pagefault_out_of_memory, wake_oom_reaper, oom_reaper,
__oom_reap_task; mm/page_alloc.c __alloc_pages_may_oom; fs/proc/base.c proc_oom_score,
oom_score_adj_write]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np

from fastmodel.oom import alloc_may_oom
from specs import pte as pt
from specs.errno import Errno
from specs.kernel import OomEvent, OomView, RssMember
from specs.oom import OOM_SCORE_ADJ_MIN, OomContext, OomResult, Task, Thread
from specs.pagetable import MmView
from specs.vma import VM_LOCKED, VM_SHARED

if TYPE_CHECKING:
    from fastmodel.kernel import FastKernel, Proc
    from fastmodel.kernel_ptes import I64

ESRCH: Final = -Errno.ESRCH
#: the CPU the oom_reaper kernel thread runs on
REAPER_CPU: Final = 0  # [Simplified: always CPU 0]
_FILE: Final = RssMember.MM_FILEPAGES
_ANON: Final = RssMember.MM_ANONPAGES
_SHMEM: Final = RssMember.MM_SHMEMPAGES
_SWAP: Final = RssMember.MM_SWAPENTS


class OomPolicy(Protocol):
    """The three decisions the kernel asks of its policy (``FastOom``, or any object with
    the same methods, such as a mutant's broken policy)."""

    def out_of_memory(self, tasks: Sequence[Task], ctx: OomContext) -> OomResult: ...

    def oom_score_adj_write(self, task: Task, value: int,
                            cap_sys_resource: bool) -> tuple[int, Task]: ...

    def oom_score(self, task: Task, totalpages: int) -> int: ...


class OomKiller:
    """Descriptors in, decisions applied, events logged, for one FastKernel."""

    def __init__(self, kernel: FastKernel, policy: OomPolicy) -> None:
        self.k = kernel
        self.policy = policy
        #: totalram_pages + total_swap_pages (no swap) [4.6: mm/oom_kill.c constrained_alloc]
        self.totalpages = sum(zone.managed_pages for zone in kernel.pages.view().zones)
        self.events: list[OomEvent] = []
        #: oom_reaper_list, the next victim first
        self.reap_queue: list[int] = []
        self.panic: str | None = None
        #: the pid the kernel last entered on behalf of (None: no process, e.g. exec)
        self.current: int | None = None

    # -- descriptors ----------------------------------------------------------------------------

    def task(self, proc: Proc, children: tuple[int, ...],
             mms: dict[int, MmView] | None = None) -> Task:
        """What 4.6's OOM code reads of one process: one thread, its own mm."""
        table = (mms if mms is not None else self.k.tables.view().by_mm).get(proc.mm)
        state, rss = proc.oom, proc.rss
        return Task(
            pid=proc.pid, threads=(Thread(tid=proc.pid, memdie=state.memdie),), mm=proc.mm,
            rss=rss[_FILE] + rss[_ANON] + rss[_SHMEM], swapents=rss[_SWAP],
            nr_ptes=table.nr_ptes if table is not None else 0,
            nr_pmds=table.nr_pmds if table is not None else 0,
            oom_score_adj=state.oom_score_adj, oom_score_adj_min=state.oom_score_adj_min,
            cap_sys_admin=state.cap_sys_admin, sigkill=state.sigkill, children=children)

    def children_of(self, pid: int) -> tuple[int, ...]:
        return tuple(sorted(p.pid for p in self.k.procs.values() if p.ppid == pid))

    def tasks(self) -> tuple[Task, ...]:
        """Every process in for_each_process order, which is creation order: ascending pid;
        each one's children in fork order (ascending pid too), found in one pass."""
        procs = sorted(self.k.procs.items())
        children: dict[int, list[int]] = {}
        for pid, proc in procs:
            children.setdefault(proc.ppid, []).append(pid)
        mms = self.k.tables.view().by_mm
        return tuple(self.task(proc, tuple(children.get(pid, ())), mms) for pid, proc in procs)

    # -- the two callers of out_of_memory -------------------------------------------------------

    def alloc_failed(self, gfp_mask: int, order: int) -> None:
        """``FailPageAlloc.on_exhausted``: the allocator itself found nothing, and the OOM
        killer runs where __alloc_pages_may_oom would.  [Simplified: the allocation then
        fails rather than being retried; the victim cannot exit inside one call.]"""
        current = self.k.procs.get(self.current) if self.current is not None else None
        if alloc_may_oom(gfp_mask, order, current is not None and current.oom.memdie):
            self.out_of_memory("alloc", gfp_mask, order)

    def pagefault(self) -> None:
        """A user-mode access ended in VM_FAULT_OOM [4.6: mm/oom_kill.c
        pagefault_out_of_memory; arch/x86/mm/fault.c mm_fault_error]."""
        self.out_of_memory("pagefault", 0, 0)

    def out_of_memory(self, trigger: str, gfp_mask: int, order: int) -> OomResult:
        """Decide on the descriptors as they are now, apply the decision, then log it."""
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
        """SIGKILL to every process the kill names, TIF_MEMDIE on the victim, and the victim
        pushed at the head of the reaper's queue when the kill asks for it; the first panic
        is recorded and the model carries on.  [4.6: mm/oom_kill.c oom_kill_process,
        mark_oom_victim, wake_oom_reaper]"""
        if result.panic is not None and self.panic is None:
            self.panic = result.panic
        kill = result.kill
        if kill is None:
            return
        procs = self.k.procs
        for pid in kill.sigkill:
            if pid in procs:
                procs[pid].oom.sigkill = True
        if kill.victim is None or kill.victim[0] not in procs:
            return
        victim = kill.victim[0]
        procs[victim].oom.memdie = True
        if kill.reap and victim not in self.reap_queue:
            self.reap_queue.insert(0, victim)

    # -- the reaper -----------------------------------------------------------------------------

    def reap(self) -> int:
        """Take the queue's head and strip its private memory: the PTEs of every VMA that
        is neither VM_LOCKED nor a shared file mapping go (VMAs and tables stay), one flush
        covers what was cleared, then the pages are released; the victim's oom_score_adj is
        pinned at -1000 and its TIF_MEMDIE cleared.  A victim that has exited is just
        dropped from the queue.  [4.6: mm/oom_kill.c oom_reaper, __oom_reap_task,
        exit_oom_victim] [Simplified: mmap_sem is always free, so the first attempt
        succeeds; no page is dirty, so nothing is skipped for that]"""
        if not self.reap_queue:
            return 0
        pid = self.reap_queue.pop(0)
        k = self.k
        proc = k.procs.get(pid)
        if proc is None:
            return pid
        gathered: list[I64] = []
        lo, hi = pt.TASK_SIZE_MAX, 0
        for vma in proc.space.view().vmas:
            if vma.flags & VM_LOCKED or (vma.file is not None and vma.flags & VM_SHARED):
                continue
            pfns, span = k._zap(proc, vma.start, vma.end)
            gathered.append(pfns)
            if span is not None:
                lo, hi = min(lo, span[0]), max(hi, span[1])
        if lo < hi:
            k.tlb.flush_tlb_mm_range(REAPER_CPU, k.tlb_mm(proc), lo, hi)
        if gathered:
            k.release(np.concatenate(gathered), REAPER_CPU)
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
        result, after = self.policy.oom_score_adj_write(
            self.task(proc, self.children_of(pid)), value, proc.oom.cap_sys_resource)
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
        return self.policy.oom_score(self.task(proc, self.children_of(pid)), self.totalpages)

    def view(self) -> OomView:
        return OomView(totalpages=self.totalpages, events=tuple(self.events),
                       reap_queue=tuple(self.reap_queue), panic=self.panic)
