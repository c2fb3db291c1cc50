"""The OOM-killer contract: constants, task descriptors and result records (``specs/oom.md``).

The OOM killer reads a handful of facts about every process (its memory counters, its
``oom_score_adj``, its credentials, its threads and children) and answers with a victim.  The
descriptors below carry exactly those facts, so the 4.6 algorithms in ``refmodel/oom.py`` are
pure functions of them, and the composed kernel model of issue 5 only has to build the
descriptors from its processes.  Results are plain values: ints, None, and frozen records.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

# -- limits [4.6: include/uapi/linux/oom.h; include/linux/oom.h; mm/oom_kill.c] ---------------
OOM_SCORE_ADJ_MIN: Final = -1000  # never chosen
OOM_SCORE_ADJ_MAX: Final = 1000
OOM_DISABLE: Final = -17  # legacy oom_adj meaning OOM_SCORE_ADJ_MIN
OOM_ADJUST_MIN: Final = -16
OOM_ADJUST_MAX: Final = 15
MAX_OOM_REAP_RETRIES: Final = 10
#: C widths the 4.6 code computes in: chosen_points is unsigned long, the points one thread
#: scores and the reported score are unsigned int.
ULONG_MAX: Final = (1 << 64) - 1
UINT_MASK: Final = (1 << 32) - 1
INT_MIN: Final = -(1 << 31)
INT_MAX: Final = (1 << 31) - 1

PANIC_NO_KILLABLE: Final = "Out of memory and no killable processes..."
PANIC_ON_OOM: Final = "Out of memory: {} panic_on_oom is enabled"


@attrs.frozen
class Thread:
    """One thread of a process: what ``select_bad_process`` tests per thread."""

    tid: int
    #: False once the thread has run exit_mm (its ``task->mm`` is NULL).
    has_mm: bool = True
    #: TIF_MEMDIE: this thread is an OOM victim with access to the memory reserves.
    memdie: bool = False
    #: PF_EXITING: the thread has started do_exit.
    exiting: bool = False


@attrs.frozen
class Task:
    """One process (a thread group) as the OOM killer sees it.

    ``pid`` is the thread-group id; the group leader is the thread whose ``tid`` equals it.
    The counters are those of the process's ``mm`` (two processes with the same ``mm``
    identity carry the same counters).  ``children`` lists the child processes in the order
    4.6 walks them: the children list of each thread, thread by thread.
    """

    pid: int
    threads: tuple[Thread, ...]
    #: mm identity; None for a kernel thread or a process whose threads all left their mm.
    mm: int | None
    #: get_mm_rss: MM_FILEPAGES + MM_ANONPAGES + MM_SHMEMPAGES, in pages.
    rss: int = 0
    #: MM_SWAPENTS: swap entries in the page tables.
    swapents: int = 0
    #: mm->nr_ptes and mm_nr_pmds(mm): page-table pages of the two lowest levels.
    nr_ptes: int = 0
    nr_pmds: int = 0
    #: PUD pages: 4.6 does not account them; only the newer formula counts them.
    nr_puds: int = 0
    #: signal->oom_score_adj and signal->oom_score_adj_min.
    oom_score_adj: int = 0
    oom_score_adj_min: int = 0
    cap_sys_admin: bool = False
    #: PF_KTHREAD.
    kthread: bool = False
    #: signal->oom_flags & OOM_FLAG_ORIGIN (swapoff, ksm unmerge): kill this one first.
    oom_origin: bool = False
    #: SIGNAL_GROUP_COREDUMP: a dumping process is not trusted to exit soon.
    coredump: bool = False
    #: A SIGKILL is pending (fatal_signal_pending).
    sigkill: bool = False
    children: tuple[int, ...] = ()

    @property
    def is_global_init(self) -> bool:
        return self.pid == 1

    def thread(self, tid: int) -> Thread | None:
        return next((t for t in self.threads if t.tid == tid), None)


class Scan(enum.Enum):
    """oom_scan_process_thread's verdict on one thread [4.6: include/linux/oom.h oom_scan_t]."""

    OK = "ok"
    CONTINUE = "continue"
    ABORT = "abort"
    SELECT = "select"


@attrs.frozen
class Choice:
    """select_bad_process found a victim: the thread, its points and the reported score."""

    pid: int
    tid: int
    #: chosen_points: the winning badness (ULONG_MAX for an OOM_FLAG_ORIGIN task).
    points: int
    #: *ppoints: chosen_points * 1000 / totalpages, as the unsigned int 4.6 stores.
    score: int


#: select_bad_process saw a TIF_MEMDIE thread: a victim is still dying, so kill nobody.
ABORT: Final = Scan.ABORT


@attrs.frozen
class Kill:
    """What oom_kill_process did.

    ``victim`` is None when the chosen process (or its sacrificed child) had no thread with
    an mm left, so nothing was killed.
    """

    #: (pid, tid) of the thread marked TIF_MEMDIE.
    victim: tuple[int, int] | None
    #: pids that got SIGKILL, victim first, then the other users of its mm in list order.
    sigkill: tuple[int, ...] = ()
    #: wake_oom_reaper(victim) was called.
    reap: bool = False
    #: the chosen thread was already exiting: it was only marked, nobody was signalled.
    already_exiting: bool = False


class Outcome(enum.Enum):
    """How one out_of_memory call ended."""

    DISABLED = "disabled"  # oom_killer_disabled: returns false, the allocation fails
    CURRENT = "current"  # current was dying anyway: marked TIF_MEMDIE, nobody else killed
    PANIC = "panic"  # panic_on_oom, or nothing killable: the machine stops
    ABORTED = "aborted"  # a victim is still exiting: returns true, nobody killed
    NONE_SYSRQ = "none"  # sysrq OOM found nobody: returns true, nobody killed
    KILLED = "killed"  # oom_kill_process ran


@attrs.frozen
class OomResult:
    outcome: Outcome
    #: out_of_memory's return value: true means "progress, retry the allocation".
    returned: bool
    kill: Kill | None = None
    choice: Choice | None = None
    #: the panic() message, without the trailing newline.
    panic: str | None = None


@attrs.frozen
class OomContext:
    """struct oom_control plus the sysctls and the caller that out_of_memory reads."""

    totalpages: int
    #: (pid, tid) of current: the thread whose allocation or fault ran out of memory.
    current: tuple[int, int] | None = None
    #: order == -1: triggered from sysrq, not by an allocation.
    sysrq: bool = False
    panic_on_oom: int = 0
    oom_kill_allocating_task: bool = False
    oom_killer_disabled: bool = False
