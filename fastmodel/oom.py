"""The 4.6 OOM killer, observably identical to the reference model (``specs/oom.md``;
``tests/fastmodel/test_oom_equivalence.py`` checks every method against it).

The reference model walks the task list thread by thread, calling ``oom_scan_process_thread``
and ``oom_badness`` (with their own lookups) for every thread, as C does.  What costs time
here is not the arithmetic but reading the descriptors: a few attribute loads per process.
So there are two ways to select, and each is used where it pays (``bench/bench_oom.py``):

* **From descriptors, one lean loop** (:func:`select_by_walk`, what
  ``FastOom.select_bad_process`` uses): a process is skipped on its first fields, scored at
  most once (at its first thread that holds the mm; its other threads reuse the score), and
  the tie rule is a flag.  About 7x the reference model at 100 to 10,000 processes.
  Copying the descriptors into numpy columns first (``TaskTable.of``) reads every field of
  every process, which alone costs more than this loop, so numpy loses on descriptors.
* **From columns, whole-array work** (:class:`TaskTable`, :func:`badness_array`,
  :func:`select_by_arrays`), for a caller that keeps its processes in columns already (the
  composed kernel may) and for checkers that need every score at once.  Badness of every
  process is one int64 pass in 4.6's order: the four counters summed, the CAP_SYS_ADMIN
  discount ``points * 3 / 100`` taken off the unadjusted sum, ``oom_score_adj *
  (totalpages / 1000)`` with the division first, the floor of 1, 0 for the ineligible.  The
  walk's outcome follows from the arrays: a TIF_MEMDIE thread of a killable process aborts
  (the scan returns at the first one, whatever it chose before); else the last
  OOM_FLAG_ORIGIN thread with an mm wins at ULONG_MAX (no ``unsigned int`` equals it); else
  the winner has the highest ``unsigned int`` points, and among the threads tied at it the
  walk keeps the first thread-group leader, or the last thread if none is a leader (an equal
  thread replaces a non-leader choice, never a leader).

C arithmetic: every quantity is non-negative in the kernel (page counts; totalpages is an
``unsigned long``), where C's truncating division and Python's and numpy's flooring ``//``
agree, so both models also agree on descriptors no kernel could produce.  A descriptor may
hold any Python int: when a value or an intermediate could leave int64, the columns become
object arrays of Python ints and the same expressions run exactly.  The C widths (``unsigned
int`` points, the ``unsigned long`` score ``chosen_points * 1000 / totalpages`` kept as
``unsigned int``) are applied to exact values, as the reference model applies them.

The kill, ``out_of_memory`` and the ``/proc`` writes touch one process and its children and
are plain Python over a pid index built once per call.  The module carries the same
departures from 4.6 as the reference model (one node, no memory cgroups, ``oom_lock`` always
free; ``specs/oom.md``, Known departures).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any, Final

import attrs
import numpy as np
import numpy.typing as npt

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

I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ERR_INVAL: Final = -int(Errno.EINVAL)
ERR_ACCES: Final = -int(Errno.EACCES)

#: int64 fast path bounds: a counter sum below 2**60 keeps ``sum * 3`` below 2**62, and an
#: adjustment term below 2**61 keeps ``sum - discount + term`` below 2**63.
SUM_LIMIT: Final = 1 << 60
ADJ_TERM_LIMIT: Final = 1 << 61

_COUNTERS: Final = attrgetter("rss", "swapents", "nr_ptes", "nr_pmds")
_THREADS: Final = attrgetter("threads")
_PID: Final = attrgetter("pid")
_ADJ: Final = attrgetter("oom_score_adj")
_ADMIN: Final = attrgetter("cap_sys_admin")
_KTHREAD: Final = attrgetter("kthread")
_ORIGIN: Final = attrgetter("oom_origin")
_HAS_MM: Final = attrgetter("has_mm")
_MEMDIE: Final = attrgetter("memdie")
_TID: Final = attrgetter("tid")


def trunc_div(num: int, den: int) -> int:
    """Division as C does it on signed operands: the quotient rounds toward zero."""
    quotient = abs(num) // abs(den)
    return -quotient if (num < 0) != (den < 0) else quotient


def _column(values: Callable[[], Iterable[int]], count: int) -> npt.NDArray[Any]:
    """int64, or an object array of Python ints when a value does not fit."""
    try:
        return np.fromiter(values(), dtype=np.int64, count=count)
    except OverflowError:
        return np.fromiter(values(), dtype=object, count=count)


def _flags(getter: Callable[[Any], Any], items: Sequence[Any]) -> BoolArray:
    return np.fromiter(map(getter, items), dtype=np.bool_, count=len(items))


@attrs.frozen
class TaskTable:
    """What the OOM killer reads, as columns: one entry per process, or per thread for the
    ``thread_*`` columns and ``owner``.

    Threads are flattened in walk order (process by process, each in thread-list order) and
    ``owner`` is the index of a thread's process.  Integer columns are int64, or object
    arrays of Python ints when some value does not fit, so a table is exact for any
    descriptor.  A kernel model that keeps its processes in columns can build one directly
    and call :func:`select_by_arrays` without any per-process Python work.
    """

    pids: npt.NDArray[Any]
    #: rss + swapents + nr_ptes + nr_pmds
    pages: npt.NDArray[Any]
    adj: npt.NDArray[Any]
    admin: BoolArray
    kthread: BoolArray
    origin: BoolArray
    #: ``task.mm is not None``
    has_mm: BoolArray
    tids: npt.NDArray[Any]
    owner: I64Array
    thread_has_mm: BoolArray
    thread_memdie: BoolArray

    @classmethod
    def of(cls, tasks: Sequence[Task]) -> TaskTable:
        count = len(tasks)
        per_task = list(map(_THREADS, tasks))
        lengths = np.fromiter(map(len, per_task), dtype=np.int64, count=count)
        threads = list(chain.from_iterable(per_task))
        return cls(
            pids=_column(lambda: map(_PID, tasks), count),
            pages=_column(lambda: map(sum, map(_COUNTERS, tasks)), count),
            adj=_column(lambda: map(_ADJ, tasks), count),
            admin=_flags(_ADMIN, tasks),
            kthread=_flags(_KTHREAD, tasks),
            origin=_flags(_ORIGIN, tasks),
            has_mm=np.fromiter((t.mm is not None for t in tasks), dtype=np.bool_, count=count),
            tids=_column(lambda: map(_TID, threads), len(threads)),
            owner=np.repeat(np.arange(count, dtype=np.int64), lengths),
            thread_has_mm=_flags(_HAS_MM, threads),
            thread_memdie=_flags(_MEMDIE, threads),
        )

    def unkillable(self) -> BoolArray:
        """oom_unkillable_task per process: global init or a kernel thread."""
        return np.asarray(self.pids == 1, dtype=np.bool_) | self.kthread

    def holds_mm(self) -> BoolArray:
        """find_lock_task_mm per process: it has an mm and some thread still holds it."""
        held = np.zeros(len(self.pids), dtype=np.bool_)
        held[self.owner[self.thread_has_mm]] = True
        return held & self.has_mm


def badness_array(tasks: Sequence[Task] | TaskTable, totalpages: int) -> npt.NDArray[Any]:
    """``oom_badness`` of every process, in list order, in one vectorised pass: int64 when
    every intermediate value fits, else an object array of the exact Python ints."""
    table = tasks if isinstance(tasks, TaskTable) else TaskTable.of(tasks)
    scale = totalpages // 1000
    pages, adj = table.pages, table.adj
    if len(pages) == 0:
        return np.zeros(0, dtype=np.int64)
    exact = np.dtype(object) in (pages.dtype, adj.dtype)
    if not exact:
        widest_adj = max(abs(int(adj.max())), abs(int(adj.min())))
        exact = (int(pages.max()) >= SUM_LIMIT or int(pages.min()) <= -SUM_LIMIT
                 or max(widest_adj, 1) * abs(scale) >= ADJ_TERM_LIMIT)
    if exact:  # the same expressions on Python ints: numpy applies them element by element
        pages, adj = pages.astype(object), adj.astype(object)
    points = pages - np.where(table.admin, pages * 3 // 100, 0)
    points = points + adj * (scale if exact else np.int64(scale))
    badness = np.where(points > 0, points, 1)
    badness[table.unkillable() | ~table.holds_mm() | (adj == OOM_SCORE_ADJ_MIN)] = 0
    return badness


def _formula(task: Task, totalpages: int) -> int:
    """4.6's badness of an eligible process in exact integers (no find_lock_task_mm check)."""
    return _scaled_formula(task, totalpages // 1000)


def _scaled_formula(task: Task, scale: int) -> int:
    """The formula with ``totalpages / 1000`` already divided out."""
    adj = task.oom_score_adj
    if adj == OOM_SCORE_ADJ_MIN:
        return 0
    points = task.rss + task.swapents + task.nr_ptes + task.nr_pmds
    if task.cap_sys_admin:
        points -= points * 3 // 100
    points += adj * scale
    return points if points > 0 else 1


def _score(points: int, totalpages: int) -> int:
    """*ppoints: ``chosen_points * 1000 / totalpages`` in unsigned long, stored as unsigned
    int."""
    return ((points * 1000) & ULONG_MAX) // totalpages & UINT_MASK


class FastOom:
    """mm/oom_kill.c of 4.6 over task descriptors, with the same methods as ``Oom46``;
    stateless."""

    # -- eligibility [4.6: mm/oom_kill.c oom_unkillable_task, find_lock_task_mm] -------------

    def oom_unkillable_task(self, task: Task) -> bool:
        """init and kernel threads are never scored, chosen or sacrificed."""
        return task.kthread or task.pid == 1

    def find_task_mm(self, task: Task) -> Thread | None:
        """The thread through which the process's mm is still reachable: the first one
        (thread-list order) that has not run exit_mm."""
        if task.mm is None:
            return None
        for thread in task.threads:
            if thread.has_mm:
                return thread
        return None

    def task_will_free_mem(self, task: Task, thread: Thread) -> bool:
        """An exiting thread frees its memory soon, unless the group is dumping core.
        [4.6: include/linux/oom.h task_will_free_mem]"""
        return bool(thread.exiting) and not task.coredump

    # -- the formula [4.6: mm/oom_kill.c oom_badness; fs/proc/base.c proc_oom_score] ---------

    def oom_badness(self, task: Task, totalpages: int) -> int:
        """0 for a process that may not be chosen; otherwise at least 1, so "eligible" and
        "scores 0" never coincide."""
        if self.oom_unkillable_task(task) or self.find_task_mm(task) is None:
            return 0
        return _formula(task, totalpages)

    def oom_score(self, task: Task, totalpages: int) -> int:
        """/proc/<pid>/oom_score: thousandths of memory (above 1000 with a positive adj)."""
        return self.oom_badness(task, totalpages) * 1000 // totalpages

    # -- selection [4.6: mm/oom_kill.c oom_scan_process_thread, select_bad_process] ------------

    def oom_scan_process_thread(self, task: Task, thread: Thread, sysrq: bool) -> Scan:
        """One thread's verdict; the checks run in 4.6's order, so a dying init or kernel
        thread is skipped before its TIF_MEMDIE could abort the scan."""
        if self.oom_unkillable_task(task):
            return Scan.CONTINUE
        if thread.memdie and not sysrq:
            return Scan.ABORT
        if task.mm is None or not thread.has_mm:
            return Scan.CONTINUE
        return Scan.SELECT if task.oom_origin else Scan.OK

    def select_bad_process(self, tasks: Sequence[Task], totalpages: int,
                           sysrq: bool = False) -> Choice | Scan | None:
        """The victim thread, ``ABORT`` or None, by :func:`select_by_walk`: from descriptors,
        one lean loop is faster than copying them into columns (module docstring)."""
        return select_by_walk(tasks, totalpages, sysrq)

    # -- the kill [4.6: mm/oom_kill.c oom_kill_process, process_shares_mm, mark_oom_victim] ---

    def process_shares_mm(self, task: Task, mm: int | None) -> bool:
        """The first thread still holding an mm decides; a process without one shares
        nothing."""
        return self.find_task_mm(task) is not None and task.mm == mm

    def sacrifice_child(self, tasks: Sequence[Task], parent: Task, totalpages: int) -> Task:
        """The worst child with an mm of its own takes the parent's place; the running best
        starts at 0 and only a strictly higher ``unsigned int`` score replaces it."""
        index = _pid_index(tasks)
        victim, best = parent, 0
        for pid in parent.children:
            child = index.get(pid)
            if child is None or self.process_shares_mm(child, parent.mm):
                continue
            points = self.oom_badness(child, totalpages) & UINT_MASK
            if points > best:
                victim, best = child, points
        return victim

    def oom_kill_process(self, tasks: Sequence[Task], pid: int, tid: int,
                         totalpages: int) -> Kill:
        """SIGKILL for the victim (or its worst child) and every killable process using
        its mm; the reaper is woken only when nobody else keeps that mm in use."""
        index = _pid_index(tasks)
        task = index.get(pid)
        thread = None if task is None else task.thread(tid)
        if task is None or thread is None:
            return Kill(None)
        if thread.has_mm and task.mm is not None and self.task_will_free_mem(task, thread):
            return Kill((pid, tid), already_exiting=True)
        victim = self.sacrifice_child(tasks, task, totalpages)
        marked = self.find_task_mm(victim)
        if marked is None:
            return Kill(None)
        signalled = [victim.pid]
        reap = True
        for other in tasks:
            if other.pid == victim.pid or not self.process_shares_mm(other, victim.mm):
                continue
            if self.oom_unkillable_task(other) or other.oom_score_adj == OOM_SCORE_ADJ_MIN:
                reap = False
            else:
                signalled.append(other.pid)
        return Kill((victim.pid, marked.tid), tuple(signalled), reap=reap)

    # -- the entry point [4.6: mm/oom_kill.c out_of_memory, check_panic_on_oom] ---------------

    def out_of_memory(self, tasks: Sequence[Task], ctx: OomContext) -> OomResult:
        """Disabled, dying current, panic_on_oom, the allocating task, or a selection, in
        4.6's order; every ending is a result, never an exception."""
        if ctx.oom_killer_disabled:
            return OomResult(Outcome.DISABLED, False)
        found = _find_current(tasks, ctx.current)
        holds_mm = False
        if found is not None:
            cur, cur_thread = found
            holds_mm = bool(cur_thread.has_mm) and cur.mm is not None
            if holds_mm and (cur.sigkill or self.task_will_free_mem(cur, cur_thread)):
                return OomResult(Outcome.CURRENT, True, Kill((cur.pid, cur_thread.tid)))
        if ctx.panic_on_oom and not ctx.sysrq:
            kind = "compulsory" if ctx.panic_on_oom == 2 else "system-wide"
            return OomResult(Outcome.PANIC, True, panic=PANIC_ON_OOM.format(kind))
        if found is not None and ctx.oom_kill_allocating_task and holds_mm:
            cur, cur_thread = found
            if not self.oom_unkillable_task(cur) and cur.oom_score_adj != OOM_SCORE_ADJ_MIN:
                kill = self.oom_kill_process(tasks, cur.pid, cur_thread.tid, ctx.totalpages)
                return OomResult(Outcome.KILLED, True, kill)
        choice = self.select_bad_process(tasks, ctx.totalpages, ctx.sysrq)
        if isinstance(choice, Choice):
            kill = self.oom_kill_process(tasks, choice.pid, choice.tid, ctx.totalpages)
            return OomResult(Outcome.KILLED, True, kill, choice)
        if choice is not None:
            return OomResult(Outcome.ABORTED, True)
        if ctx.sysrq:
            return OomResult(Outcome.NONE_SYSRQ, True)
        return OomResult(Outcome.PANIC, True, panic=PANIC_NO_KILLABLE)

    # -- /proc [4.6: fs/proc/base.c oom_score_adj_write, oom_adj_write, oom_adj_read] ---------

    def oom_score_adj_write(self, task: Task, value: int,
                            cap_sys_resource: bool) -> tuple[int, Task]:
        """Going below ``oom_score_adj_min`` needs CAP_SYS_RESOURCE; a privileged write
        also moves the minimum."""
        if value < OOM_SCORE_ADJ_MIN or value > OOM_SCORE_ADJ_MAX or not _leader_mm(task):
            return ERR_INVAL, task
        if not cap_sys_resource:
            if value < task.oom_score_adj_min:
                return ERR_ACCES, task
            return 0, attrs.evolve(task, oom_score_adj=value)
        return 0, attrs.evolve(task, oom_score_adj=value, oom_score_adj_min=value)

    def oom_adj_write(self, task: Task, oom_adj: int,
                      cap_sys_resource: bool) -> tuple[int, Task]:
        """The legacy -17..15 scale; unlike oom_score_adj, going below the *current* value
        needs CAP_SYS_RESOURCE, and the minimum never moves."""
        in_range = OOM_ADJUST_MIN <= oom_adj <= OOM_ADJUST_MAX or oom_adj == OOM_DISABLE
        if not in_range or not _leader_mm(task):
            return ERR_INVAL, task
        value = (OOM_SCORE_ADJ_MAX if oom_adj == OOM_ADJUST_MAX
                 else trunc_div(oom_adj * OOM_SCORE_ADJ_MAX, -OOM_DISABLE))
        if value < task.oom_score_adj and not cap_sys_resource:
            return ERR_ACCES, task
        return 0, attrs.evolve(task, oom_score_adj=value)

    def oom_adj_read(self, task: Task) -> int:
        if task.oom_score_adj == OOM_SCORE_ADJ_MAX:
            return OOM_ADJUST_MAX
        return trunc_div(task.oom_score_adj * -OOM_DISABLE, OOM_SCORE_ADJ_MAX)


def select_by_arrays(table: TaskTable, totalpages: int,
                     sysrq: bool = False) -> Choice | Scan | None:
    """select_bad_process decided from the columns of ``table`` (module docstring)."""
    owner = table.owner
    if len(owner) == 0:
        return None
    killable_thread = ~table.unkillable()[owner]
    if not sysrq and bool(np.any(table.thread_memdie & killable_thread)):
        return ABORT
    walked = killable_thread & table.thread_has_mm & table.has_mm[owner]
    origin = np.flatnonzero(walked & table.origin[owner])
    if origin.size:
        index = int(origin[-1])
        return Choice(int(table.pids[owner[index]]), int(table.tids[index]), ULONG_MAX,
                      _score(ULONG_MAX, totalpages))
    points = (badness_array(table, totalpages) & UINT_MASK).astype(np.int64)[owner]
    points[~walked] = 0
    best = int(points.max())
    if best == 0:
        return None
    tied = np.flatnonzero(points == best)
    leaders = tied[table.tids[tied] == table.pids[owner[tied]]]
    chosen = int(leaders[0] if leaders.size else tied[-1])
    return Choice(int(table.pids[owner[chosen]]), int(table.tids[chosen]), best,
                  _score(best, totalpages))


def select_by_walk(tasks: Sequence[Task], totalpages: int,
                   sysrq: bool = False) -> Choice | Scan | None:
    """select_bad_process as one loop: a process is scored once, at its first thread with
    the mm, and its other threads reuse the score (the badness is per process)."""
    scale = totalpages // 1000
    chosen_pid = chosen_tid = -1
    chosen_points = 0
    leader_chosen = False
    for task in tasks:
        if task.kthread or task.pid == 1:
            continue
        pid, mm = task.pid, task.mm
        points = -1
        for thread in task.threads:
            if thread.memdie and not sysrq:
                return ABORT
            if mm is None or not thread.has_mm:
                continue
            if task.oom_origin:
                chosen_pid, chosen_tid, chosen_points = pid, thread.tid, ULONG_MAX
                leader_chosen = thread.tid == pid
                continue
            if points < 0:
                points = _scaled_formula(task, scale) & UINT_MASK
            if not points or points < chosen_points or (
                    points == chosen_points and leader_chosen):
                continue
            chosen_pid, chosen_tid, chosen_points = pid, thread.tid, points
            leader_chosen = thread.tid == pid
    if not chosen_points:
        return None
    return Choice(chosen_pid, chosen_tid, chosen_points, _score(chosen_points, totalpages))


def _pid_index(tasks: Sequence[Task]) -> dict[int, Task]:
    """pid -> the first listed process with it (what a for_each_process lookup finds)."""
    index: dict[int, Task] = {}
    for task in tasks:
        index.setdefault(task.pid, task)
    return index


def _find_current(tasks: Sequence[Task],
                  current: tuple[int, int] | None) -> tuple[Task, Thread] | None:
    if current is None:
        return None
    task = _pid_index(tasks).get(current[0])
    thread = None if task is None else task.thread(current[1])
    return None if task is None or thread is None else (task, thread)


def _leader_mm(task: Task) -> bool:
    """/proc/<pid> is the group leader, and the writes lock the leader's own mm."""
    leader = task.thread(task.pid)
    return task.mm is not None and leader is not None and bool(leader.has_mm)


# -- state after a kill and after reaping [4.6: mm/oom_kill.c mark_oom_victim,
#    __oom_reap_task, exit_oom_victim] --------------------------------------------------------


def apply_kill(tasks: Sequence[Task], kill: Kill) -> tuple[Task, ...]:
    """The descriptors after ``kill``: SIGKILL pending on every signalled process and
    TIF_MEMDIE on the victim thread."""
    signalled = set(kill.sigkill)
    victim_pid, victim_tid = kill.victim if kill.victim is not None else (None, None)
    out = []
    for task in tasks:
        after = attrs.evolve(task, sigkill=True) if task.pid in signalled else task
        if task.pid == victim_pid:
            after = attrs.evolve(after, threads=tuple(
                attrs.evolve(th, memdie=True) if th.tid == victim_tid else th
                for th in task.threads))
        out.append(after)
    return tuple(out)


def after_reap(task: Task, tid: int) -> Task:
    """A reaped victim is pinned at oom_score_adj -1000 and loses TIF_MEMDIE, so the next
    OOM neither waits for it nor chooses it; with no mm left the reaper changes nothing."""
    if FAST_OOM.find_task_mm(task) is None:
        return task
    return attrs.evolve(task, oom_score_adj=OOM_SCORE_ADJ_MIN, threads=tuple(
        attrs.evolve(th, memdie=False) if th.tid == tid else th for th in task.threads))


# -- the allocator's gate [4.6: mm/page_alloc.c __alloc_pages_slowpath,
#    __alloc_pages_may_oom] -------------------------------------------------------------------

_NEVER_OOM: Final = gfp.__GFP_NORETRY | gfp.__GFP_THISNODE


def alloc_may_oom(gfp_mask: int, order: int, current_memdie: bool = False) -> bool:
    """Whether a failed allocation reaches out_of_memory: __GFP_NOFAIL always does once
    it may reclaim and its caller is not itself a victim (or insists), the rest only as an
    order-0..3, ZONE_NORMAL-capable, __GFP_FS allocation free to retry on any node."""
    if not gfp_mask & gfp.__GFP_DIRECT_RECLAIM:
        return False
    if gfp_mask & gfp.__GFP_NOFAIL:
        return True
    if current_memdie or gfp_mask & _NEVER_OOM or order > PAGE_ALLOC_COSTLY_ORDER:
        return False
    return bool(gfp_mask & gfp.__GFP_FS) and gfp.gfp_zone(gfp_mask) >= gfp.ZoneType.ZONE_NORMAL


def pagefault_out_of_memory(tasks: Sequence[Task], ctx: OomContext) -> OomResult:
    """VM_FAULT_OOM from a user fault: an ordinary (never sysrq) out_of_memory with no gfp
    filter; ``oom_lock`` is always free, as in the reference model.
    [4.6: mm/oom_kill.c pagefault_out_of_memory; arch/x86/mm/fault.c mm_fault_error]"""
    if ctx.sysrq:
        ctx = attrs.evolve(ctx, sysrq=False)
    return FAST_OOM.out_of_memory(tasks, ctx)


# -- the newer formula of host kernels (5.9 and later) ---------------------------------------


def oom_badness_v6(task: Task, totalpages: int) -> int | None:
    """No root discount, every page-table level, no floor, None (LONG_MIN) when not
    eligible.  [later: mm/oom_kill.c oom_badness]"""
    if (FAST_OOM.oom_unkillable_task(task) or FAST_OOM.find_task_mm(task) is None
            or task.oom_score_adj == OOM_SCORE_ADJ_MIN):
        return None
    pages = task.rss + task.swapents + task.nr_ptes + task.nr_pmds + task.nr_puds
    return pages + task.oom_score_adj * (totalpages // 1000)


def oom_score_v6(task: Task, totalpages: int) -> int:
    """0..2000: ``(1000 + badness * 1000 / totalpages) * 2 / 3`` with C's signed division.
    [later: fs/proc/base.c proc_oom_score]"""
    badness = oom_badness_v6(task, totalpages)
    if badness is None:
        return 0
    return trunc_div(2 * (1000 + trunc_div(1000 * badness, totalpages)), 3)


FAST_OOM: Final = FastOom()
oom_badness = FAST_OOM.oom_badness
oom_score = FAST_OOM.oom_score
select_bad_process = FAST_OOM.select_bad_process
oom_kill_process = FAST_OOM.oom_kill_process
out_of_memory = FAST_OOM.out_of_memory
oom_score_adj_write = FAST_OOM.oom_score_adj_write
oom_adj_write = FAST_OOM.oom_adj_write
oom_adj_read = FAST_OOM.oom_adj_read
