"""The reference OOM killer: 4.6's badness formula, victim selection and kill, as pure functions.

Every function takes the task descriptors of ``specs/oom.py`` and returns a value or a new
descriptor; nothing is kept between calls.  The functions are methods of :class:`Oom46` so a
deliberately broken variant (``tests/mutants/oom.py``) can replace one of them and every
caller inside the class sees the replacement, exactly as a buggy kernel would use its own
buggy ``oom_badness`` everywhere.  The module-level names are the methods of one shared
instance.

C arithmetic is kept where it shows: the per-thread points are an ``unsigned int``, the
reported score is ``chosen_points * 1000 / totalpages`` in ``unsigned long``, and every
division truncates toward zero.

The newer formula that later kernels (5.9 and up, so the host kernel) use is
:func:`oom_badness_v6` / :func:`oom_score_v6`; it is here so the host oracle can pin it, and
it is never used by the 4.6 functions.

[Simplified: one node and no memory cgroups: every OOM is CONSTRAINT_NONE, totalpages is
always totalram_pages + total_swap_pages, and no task is filtered by cpuset, mempolicy or
memcg; no OOM notifiers are registered, so out_of_memory never returns early for them]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

from specs import gfp
from specs.errno import Errno
from specs.machine import PAGE_ALLOC_COSTLY_ORDER
from specs.oom import (
    ABORT,
    OOM_ADJUST_MAX,
    OOM_ADJUST_MIN,
    OOM_DISABLE,
    OOM_SCORE_ADJ_MAX,
    OOM_SCORE_ADJ_MIN,
    PANIC_NO_KILLABLE,
    PANIC_ON_OOM,
    UINT_MASK,
    ULONG_MAX,
    Choice,
    Kill,
    OomContext,
    OomResult,
    Outcome,
    Scan,
    Task,
    Thread,
)

EINVAL: Final = -Errno.EINVAL
EACCES: Final = -Errno.EACCES
ULONG_MASK: Final = ULONG_MAX


def cdiv(a: int, b: int) -> int:
    """C's integer division: truncates toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def task_by_pid(tasks: Sequence[Task], pid: int) -> Task | None:
    return next((t for t in tasks if t.pid == pid), None)


class Oom46:
    """4.6's mm/oom_kill.c over task descriptors; stateless."""

    # -- eligibility [4.6: mm/oom_kill.c oom_unkillable_task, find_lock_task_mm] -------------

    def oom_unkillable_task(self, task: Task) -> bool:
        """Global init and kernel threads are never candidates."""
        return task.is_global_init or task.kthread

    def find_task_mm(self, task: Task) -> Thread | None:
        """The first thread (thread-list order) that still has the process's mm: a group
        whose leader has exited is still scored through its other threads."""
        if task.mm is None:
            return None
        return next((t for t in task.threads if t.has_mm), None)

    def task_will_free_mem(self, task: Task, thread: Thread) -> bool:
        """[4.6: include/linux/oom.h task_will_free_mem] exiting and not dumping core."""
        return thread.exiting and not task.coredump

    # -- the formula [4.6: mm/oom_kill.c oom_badness] -----------------------------------------

    def oom_badness(self, task: Task, totalpages: int) -> int:
        """Pages the kill would free, discounted for root and shifted by oom_score_adj.

        0 means "not eligible"; an eligible task scores at least 1, so a score of 0 can never
        be mistaken for a candidate.  The adj scale is ``totalpages / 1000`` computed first,
        so below 1000 pages of memory the adjustment has no effect at all.
        """
        if self.oom_unkillable_task(task) or self.find_task_mm(task) is None:
            return 0
        adj = task.oom_score_adj
        if adj == OOM_SCORE_ADJ_MIN:
            return 0
        points = task.rss + task.swapents + task.nr_ptes + task.nr_pmds
        if task.cap_sys_admin:
            points -= points * 3 // 100
        points += adj * (totalpages // 1000)
        return points if points > 0 else 1

    def oom_score(self, task: Task, totalpages: int) -> int:
        """/proc/<pid>/oom_score: badness in thousandths of memory, 0..1000 for adj <= 0.
        [4.6: fs/proc/base.c proc_oom_score]"""
        return self.oom_badness(task, totalpages) * 1000 // totalpages

    # -- selection [4.6: mm/oom_kill.c oom_scan_process_thread, select_bad_process] ------------

    def oom_scan_process_thread(self, task: Task, thread: Thread, sysrq: bool) -> Scan:
        if self.oom_unkillable_task(task):
            return Scan.CONTINUE
        if thread.memdie and not sysrq:
            return Scan.ABORT
        if not thread.has_mm or task.mm is None:
            return Scan.CONTINUE
        if task.oom_origin:
            return Scan.SELECT
        return Scan.OK

    def select_bad_process(self, tasks: Sequence[Task], totalpages: int,
                           sysrq: bool = False) -> Choice | Scan | None:
        """The thread with the most points, walking processes and their threads in list
        order; ``ABORT`` while some victim still holds TIF_MEMDIE; None if nobody qualifies.

        Ties: a later thread with equal points replaces the choice unless the choice is a
        thread-group leader, so among equal processes the first listed wins.
        """
        chosen: tuple[Task, Thread] | None = None
        chosen_points = 0
        for task in tasks:
            for thread in task.threads:
                verdict = self.oom_scan_process_thread(task, thread, sysrq)
                if verdict is Scan.SELECT:
                    chosen, chosen_points = (task, thread), ULONG_MAX
                    continue
                if verdict is Scan.CONTINUE:
                    continue
                if verdict is Scan.ABORT:
                    return ABORT
                points = self.oom_badness(task, totalpages) & UINT_MASK
                if not points or points < chosen_points:
                    continue
                if (points == chosen_points and chosen is not None
                        and chosen[1].tid == chosen[0].pid):
                    continue
                chosen, chosen_points = (task, thread), points
        if chosen is None:
            return None
        score = (chosen_points * 1000 & ULONG_MASK) // totalpages & UINT_MASK
        return Choice(chosen[0].pid, chosen[1].tid, chosen_points, score)

    # -- the kill [4.6: mm/oom_kill.c oom_kill_process, process_shares_mm] ---------------------

    def process_shares_mm(self, task: Task, mm: int | None) -> bool:
        """Decided by the first thread that still has an mm; a process with none shares
        nothing."""
        thread = self.find_task_mm(task)
        return thread is not None and task.mm == mm

    def sacrifice_child(self, tasks: Sequence[Task], parent: Task, totalpages: int) -> Task:
        """The child (with its own mm) of highest badness, if any scores above 0; else the
        parent.  Strictly greater replaces, so the first of equal children wins."""
        victim, victim_points = parent, 0
        for child_pid in parent.children:
            child = task_by_pid(tasks, child_pid)
            if child is None or self.process_shares_mm(child, parent.mm):
                continue
            child_points = self.oom_badness(child, totalpages) & UINT_MASK
            if child_points > victim_points:
                victim, victim_points = child, child_points
        return victim

    def oom_kill_process(self, tasks: Sequence[Task], pid: int, tid: int,
                         totalpages: int) -> Kill:
        """Kill the chosen thread's process, or rather its worst child with another mm.

        SIGKILL goes to the victim and to every other process using its mm; one that may not
        be killed (kernel thread, init, oom_score_adj -1000) keeps the mm alive, so the reaper
        is not woken.
        """
        task = task_by_pid(tasks, pid)
        thread = task.thread(tid) if task is not None else None
        if task is None or thread is None:
            return Kill(None)
        if thread.has_mm and task.mm is not None and self.task_will_free_mem(task, thread):
            return Kill((pid, tid), already_exiting=True)
        victim = self.sacrifice_child(tasks, task, totalpages)
        victim_thread = self.find_task_mm(victim)
        if victim_thread is None:
            return Kill(None)
        killed = [victim.pid]
        can_oom_reap = True
        for other in tasks:
            if other.pid == victim.pid or not self.process_shares_mm(other, victim.mm):
                continue
            if (other.kthread or other.is_global_init
                    or other.oom_score_adj == OOM_SCORE_ADJ_MIN):
                can_oom_reap = False
                continue
            killed.append(other.pid)
        return Kill((victim.pid, victim_thread.tid), tuple(killed), reap=can_oom_reap)

    # -- the entry point [4.6: mm/oom_kill.c out_of_memory, check_panic_on_oom] ---------------

    def out_of_memory(self, tasks: Sequence[Task], ctx: OomContext) -> OomResult:
        """One OOM: mark a dying current, panic, abort, or kill; never raises."""
        if ctx.oom_killer_disabled:
            return OomResult(Outcome.DISABLED, False)
        current = self._current(tasks, ctx)
        if current is not None:
            task, thread = current
            if thread.has_mm and task.mm is not None and (
                    task.sigkill or self.task_will_free_mem(task, thread)):
                return OomResult(Outcome.CURRENT, True, Kill((task.pid, thread.tid)))
        if ctx.panic_on_oom and not ctx.sysrq:
            kind = "compulsory" if ctx.panic_on_oom == 2 else "system-wide"
            return OomResult(Outcome.PANIC, True, panic=PANIC_ON_OOM.format(kind))
        if ctx.oom_kill_allocating_task and current is not None:
            task, thread = current
            if (thread.has_mm and task.mm is not None and not self.oom_unkillable_task(task)
                    and task.oom_score_adj != OOM_SCORE_ADJ_MIN):
                kill = self.oom_kill_process(tasks, task.pid, thread.tid, ctx.totalpages)
                return OomResult(Outcome.KILLED, True, kill)
        found = self.select_bad_process(tasks, ctx.totalpages, ctx.sysrq)
        if found is None:
            if ctx.sysrq:
                return OomResult(Outcome.NONE_SYSRQ, True)
            return OomResult(Outcome.PANIC, True, panic=PANIC_NO_KILLABLE)
        if not isinstance(found, Choice):
            return OomResult(Outcome.ABORTED, True)
        kill = self.oom_kill_process(tasks, found.pid, found.tid, ctx.totalpages)
        return OomResult(Outcome.KILLED, True, kill, found)

    def _current(self, tasks: Sequence[Task], ctx: OomContext) -> tuple[Task, Thread] | None:
        if ctx.current is None:
            return None
        task = task_by_pid(tasks, ctx.current[0])
        thread = task.thread(ctx.current[1]) if task is not None else None
        return (task, thread) if task is not None and thread is not None else None

    # -- /proc writes [4.6: fs/proc/base.c oom_score_adj_write, oom_adj_write, oom_adj_read] --

    def oom_score_adj_write(self, task: Task, value: int,
                            cap_sys_resource: bool) -> tuple[int, Task]:
        """(0 or -errno, the task afterwards).  Below ``oom_score_adj_min`` (not below the
        current value) needs CAP_SYS_RESOURCE, and a writer holding it moves the minimum."""
        if not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
            return EINVAL, task
        if not self._leader_has_mm(task):
            return EINVAL, task
        if value < task.oom_score_adj_min and not cap_sys_resource:
            return EACCES, task
        new_min = value if cap_sys_resource else task.oom_score_adj_min
        return 0, attrs.evolve(task, oom_score_adj=value, oom_score_adj_min=new_min)

    def oom_adj_write(self, task: Task, oom_adj: int,
                      cap_sys_resource: bool) -> tuple[int, Task]:
        """The legacy scale: 15 means 1000, otherwise ``oom_adj * 1000 / 17``, so -17 is
        -1000.  Unlike oom_score_adj, lowering below the *current* value needs the cap."""
        if (oom_adj < OOM_ADJUST_MIN or oom_adj > OOM_ADJUST_MAX) and oom_adj != OOM_DISABLE:
            return EINVAL, task
        if not self._leader_has_mm(task):
            return EINVAL, task
        if oom_adj == OOM_ADJUST_MAX:
            value = OOM_SCORE_ADJ_MAX
        else:
            value = cdiv(oom_adj * OOM_SCORE_ADJ_MAX, -OOM_DISABLE)
        if value < task.oom_score_adj and not cap_sys_resource:
            return EACCES, task
        return 0, attrs.evolve(task, oom_score_adj=value)

    def oom_adj_read(self, task: Task) -> int:
        if task.oom_score_adj == OOM_SCORE_ADJ_MAX:
            return OOM_ADJUST_MAX
        return cdiv(task.oom_score_adj * -OOM_DISABLE, OOM_SCORE_ADJ_MAX)

    def _leader_has_mm(self, task: Task) -> bool:
        """/proc/<pid> names the group leader; its own mm pointer is what the write locks."""
        leader = task.thread(task.pid)
        return leader is not None and leader.has_mm and task.mm is not None


# -- state after a kill and after reaping ----------------------------------------------------


def apply_kill(tasks: Sequence[Task], kill: Kill) -> tuple[Task, ...]:
    """The task list after ``kill``: SIGKILL pending where sent, TIF_MEMDIE on the victim
    thread.  [4.6: mm/oom_kill.c mark_oom_victim]"""
    out = []
    for task in tasks:
        after = attrs.evolve(task, sigkill=True) if task.pid in kill.sigkill else task
        if kill.victim is not None and task.pid == kill.victim[0]:
            threads = tuple(attrs.evolve(t, memdie=True) if t.tid == kill.victim[1] else t
                            for t in task.threads)
            after = attrs.evolve(after, threads=threads)
        out.append(after)
    return tuple(out)


def after_reap(task: Task, tid: int) -> Task:
    """The victim's descriptor once __oom_reap_task succeeded: its oom_score_adj is pinned
    at -1000 so it is never chosen again and TIF_MEMDIE is cleared so the next OOM may pick
    someone else.  What the reaper unmaps needs the composed model (issue 5).
    [4.6: mm/oom_kill.c __oom_reap_task, exit_oom_victim]"""
    if OOM46.find_task_mm(task) is None:
        return task  # no mm left: the reaper counts this as done and changes nothing
    threads = tuple(attrs.evolve(t, memdie=False) if t.tid == tid else t for t in task.threads)
    return attrs.evolve(task, oom_score_adj=OOM_SCORE_ADJ_MIN, threads=threads)


# -- when the allocator calls out_of_memory [4.6: mm/page_alloc.c __alloc_pages_slowpath,
#    __alloc_pages_may_oom] -------------------------------------------------------------------


def alloc_may_oom(gfp_mask: int, order: int, current_memdie: bool = False) -> bool:
    """True when an allocation that reclaim could not satisfy goes on to out_of_memory.

    __GFP_NOFAIL always does.  Otherwise: no direct reclaim, __GFP_NORETRY or a caller that
    is itself an OOM victim fail first; orders above PAGE_ALLOC_COSTLY_ORDER, allocations
    limited to zones below ZONE_NORMAL, allocations without __GFP_FS (which keep looping
    instead) and __GFP_THISNODE ones never kill.
    """
    nofail = bool(gfp_mask & gfp.__GFP_NOFAIL)
    if not gfp_mask & gfp.__GFP_DIRECT_RECLAIM:
        return False
    if current_memdie and not nofail:
        return False
    if nofail:
        return True
    if gfp_mask & gfp.__GFP_NORETRY:
        return False
    if order > PAGE_ALLOC_COSTLY_ORDER:
        return False
    if gfp.gfp_zone(gfp_mask) < gfp.ZoneType.ZONE_NORMAL:
        return False
    if not gfp_mask & gfp.__GFP_FS:
        return False
    return not gfp_mask & gfp.__GFP_THISNODE


def pagefault_out_of_memory(tasks: Sequence[Task], ctx: OomContext) -> OomResult:
    """A user-mode fault returned VM_FAULT_OOM: out_of_memory with gfp_mask 0 and order 0,
    so none of alloc_may_oom's filters apply; the faulting task then retries the fault (or
    dies of its SIGKILL).  [4.6: mm/oom_kill.c pagefault_out_of_memory; arch/x86/mm/fault.c
    mm_fault_error] [Simplified: oom_lock is always free (one CPU runs at a time)]"""
    return OOM46.out_of_memory(tasks, attrs.evolve(ctx, sysrq=False))


# -- the newer formula (host kernels since 5.9) ----------------------------------------------


def oom_badness_v6(task: Task, totalpages: int) -> int | None:
    """Later kernels' badness: no root discount, page tables of every level, no floor of 1,
    and None (LONG_MIN) instead of 0 for a task that may not be killed.  The adj scale is
    still ``totalpages / 1000`` computed first.  [later: mm/oom_kill.c oom_badness, since
    5.9 (e642d9be463d); the root discount went in 4.17]"""
    if OOM46.oom_unkillable_task(task) or OOM46.find_task_mm(task) is None:
        return None
    if task.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return None
    points = task.rss + task.swapents + task.nr_ptes + task.nr_pmds + task.nr_puds
    return points + task.oom_score_adj * (totalpages // 1000)


def oom_score_v6(task: Task, totalpages: int) -> int:
    """Later kernels' /proc/<pid>/oom_score: badness mapped onto 0..2000 as
    ``(1000 + badness * 1000 / totalpages) * 2 / 3`` in signed C arithmetic; 0 when the
    task may not be killed.  [later: fs/proc/base.c proc_oom_score]"""
    badness = oom_badness_v6(task, totalpages)
    if badness is None:
        return 0
    return cdiv((1000 + cdiv(badness * 1000, totalpages)) * 2, 3)


OOM46: Final = Oom46()
oom_badness = OOM46.oom_badness
oom_score = OOM46.oom_score
select_bad_process = OOM46.select_bad_process
oom_kill_process = OOM46.oom_kill_process
out_of_memory = OOM46.out_of_memory
oom_score_adj_write = OOM46.oom_score_adj_write
oom_adj_write = OOM46.oom_adj_write
oom_adj_read = OOM46.oom_adj_read
