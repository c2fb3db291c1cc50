"""4.6's OOM killer against hand-computed tables (``specs/oom.md``).

Every expected value below was worked out by hand from 4.6's mm/oom_kill.c and
fs/proc/base.c; the comment on each row shows the arithmetic.  Nothing here calls the code
under test to get an expected value.  Each table has a ``*_failures(impl)`` function returning
the rows an implementation gets wrong, so ``test_oom_mutants.py`` can show that the same
tables reject every broken variant in ``tests/mutants/oom.py``.

Most rows use TP = 262144 pages (1 GiB): TP // 1000 = 262, while TP / 1000 = 262.144, so
"divide first" and "multiply first" differ as soon as |adj| * 0.144 reaches 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from refmodel.oom import (
    OOM46,
    Oom46,
    after_reap,
    alloc_may_oom,
    apply_kill,
    oom_badness_v6,
    oom_score_v6,
    pagefault_out_of_memory,
)
from specs import gfp
from specs.errno import Errno
from specs.oom import (
    ABORT,
    PANIC_NO_KILLABLE,
    ULONG_MAX,
    Choice,
    Kill,
    OomContext,
    Outcome,
    Task,
    Thread,
)

TP = 262144


def proc(pid: int, rss: int = 0, *, mm: int | None = -1, tids: tuple[int, ...] = (),
         no_mm: tuple[int, ...] = (), memdie: tuple[int, ...] = (),
         exiting: tuple[int, ...] = (), **fields: Any) -> Task:
    """A process with one thread (tid == pid) unless ``tids`` says otherwise; its own mm
    (identity = pid) unless ``mm`` names one; threads in ``no_mm`` have left the mm."""
    threads = tuple(Thread(t, has_mm=t not in no_mm, memdie=t in memdie, exiting=t in exiting)
                    for t in (tids or (pid,)))
    return Task(pid, threads, pid if mm == -1 else mm, rss=rss, **fields)


# ---------------------------------------------------------------------------------------------
# oom_badness
# ---------------------------------------------------------------------------------------------

#: (id, task, totalpages, expected badness)
BADNESS = [
    # 1000 + 0 + 2 + 1 = 1003; no discount, adj 0.
    ("plain", proc(10, 1000, nr_ptes=2, nr_pmds=1), TP, 1003),
    # 1003 - 1003*3/100 = 1003 - 3009/100 = 1003 - 30 = 973.
    ("admin", proc(10, 1000, nr_ptes=2, nr_pmds=1, cap_sys_admin=True), TP, 973),
    # 10 + 20 swap + 3 + 1 = 34; admin: 34*3/100 = 102/100 = 1 -> 33.
    ("swap+tables admin", proc(10, 10, swapents=20, nr_ptes=3, nr_pmds=1,
                               cap_sys_admin=True), TP, 33),
    # 33*3/100 = 99/100 = 0: below 34 pages the 3% discount vanishes.
    ("admin rounds to 0", proc(10, 33, cap_sys_admin=True), TP, 33),
    # adj 1: 1000 + 1*262 = 1262.
    ("adj 1", proc(10, 1000, oom_score_adj=1), TP, 1262),
    # adj 500: divide first: 500*262 = 131000 -> 132000 (multiply first would add 131072).
    ("adj 500 divides first", proc(10, 1000, oom_score_adj=500), TP, 132000),
    # adj -999: 300000 - 999*262 = 300000 - 261738 = 38262 (multiply first: -261881856/1000
    # truncates to -261881, giving 38119).
    ("adj -999", proc(10, 300000, oom_score_adj=-999), TP, 38262),
    # adj -1: 100 - 262 = -162 <= 0 -> the floor of 1.
    ("negative gets 1", proc(10, 100, oom_score_adj=-1), TP, 1),
    # nothing at all, adj 0: 0 -> 1 (eligible tasks never score 0).
    ("empty gets 1", proc(10, 0), TP, 1),
    # admin first, then adj: 1000 - 30 = 970; + 100*262 = 26200 -> 27170
    # (discounting after adj: 27200 - 816 = 26384).
    ("admin then adj", proc(10, 1000, cap_sys_admin=True, oom_score_adj=100), TP, 27170),
    # admin then a negative adj: 970 - 262 = 708 (discounting after adj: 738 - 22 = 716).
    ("admin then negative adj", proc(10, 1000, cap_sys_admin=True, oom_score_adj=-1), TP,
     708),
    # admin and negative: 100 - 3 = 97; 97 - 262 = -165 -> 1.
    ("admin negative gets 1", proc(10, 100, cap_sys_admin=True, oom_score_adj=-1), TP, 1),
    # -1000 means never, whatever the size.
    ("adj -1000", proc(10, 500000, oom_score_adj=-1000), TP, 0),
    # TP 999: 999 // 1000 = 0, so adj 1000 adds nothing: 10.
    ("tiny memory ignores adj", proc(10, 10, oom_score_adj=1000), 999, 10),
    # TP 999, adj -999: 0 + 0 = 0 -> 1 (but -1000 still means never, next row).
    ("tiny memory floor", proc(10, 0, oom_score_adj=-999), 999, 1),
    ("tiny memory -1000", proc(10, 5, oom_score_adj=-1000), 999, 0),
    # TP 2500: 2500 // 1000 = 2: 7 + 3*2 = 13 (multiply first: 7 + 7500/1000 = 14).
    ("small TP", proc(10, 7, oom_score_adj=3), 2500, 13),
    # global init and kernel threads are never candidates.
    ("init", proc(1, 9999), TP, 0),
    ("kthread", proc(2, 0, mm=None, kthread=True), TP, 0),
    # every thread has left the mm: nothing to find.
    ("no mm left", proc(10, 500, tids=(10, 11), no_mm=(10, 11)), TP, 0),
    # the leader left, thread 11 still holds the mm: scored as usual, 500.
    ("leader gone", proc(10, 500, tids=(10, 11), no_mm=(10,)), TP, 500),
]


def badness_failures(impl: Oom46) -> list[str]:
    return [f"{name}: got {impl.oom_badness(task, tp)}, want {want}"
            for name, task, tp, want in BADNESS if impl.oom_badness(task, tp) != want]


@pytest.mark.parametrize(("task", "tp", "want"), [row[1:] for row in BADNESS],
                         ids=[row[0] for row in BADNESS])
def test_badness(task: Task, tp: int, want: int) -> None:
    assert want == OOM46.oom_badness(task, tp)


#: (id, task, totalpages, /proc/<pid>/oom_score in 4.6)
SCORE = [
    # 1003 * 1000 / 262144 = 1003000 / 262144 = 3.83 -> 3.
    ("small", proc(10, 1000, nr_ptes=2, nr_pmds=1), TP, 3),
    # badness 1 -> 1000 / 262144 = 0.
    ("floor", proc(10, 0), TP, 0),
    # all of memory: 262144000 / 262144 = 1000.
    ("all memory", proc(10, TP), TP, 1000),
    # adj pushes past 1000: 300000 + 262000 = 562000; 562000000 / 262144 = 2143.9 -> 2143.
    ("above 1000", proc(10, 300000, oom_score_adj=1000), TP, 2143),
    ("never", proc(10, TP, oom_score_adj=-1000), TP, 0),
    ("init", proc(1, TP), TP, 0),
]


def score_failures(impl: Oom46) -> list[str]:
    return [f"{name}: got {impl.oom_score(task, tp)}, want {want}"
            for name, task, tp, want in SCORE if impl.oom_score(task, tp) != want]


@pytest.mark.parametrize(("task", "tp", "want"), [row[1:] for row in SCORE],
                         ids=[row[0] for row in SCORE])
def test_proc_oom_score(task: Task, tp: int, want: int) -> None:
    assert want == OOM46.oom_score(task, tp)


# ---------------------------------------------------------------------------------------------
# The newer formula, and where it parts from 4.6
# ---------------------------------------------------------------------------------------------

#: (id, task, totalpages, v6 badness, v6 oom_score)
V6 = [
    # 1000 + 2 + 1 + 1 PUD = 1004; no admin discount.  1004000/262144 = 3 -> (1003)*2/3 = 668.
    ("admin, all levels", proc(10, 1000, nr_ptes=2, nr_pmds=1, nr_puds=1,
                               cap_sys_admin=True), TP, 1004, 668),
    # -1000: LONG_MIN, reported as 0.
    ("never", proc(10, 1000, oom_score_adj=-1000), TP, None, 0),
    ("init", proc(1, 1000), TP, None, 0),
    # no floor: 100 - 262 = -162; -162000/262144 = -0.6 -> 0; 1000*2/3 = 666.
    ("negative", proc(10, 100, oom_score_adj=-1), TP, -162, 666),
    # 131 - 2*262 = -393; -393000/262144 = -1.499 truncates to -1 (flooring gives -2):
    # (999)*2/3 = 666 (flooring: 998*2/3 = 665).
    ("truncates toward zero", proc(10, 131, oom_score_adj=-2), TP, -393, 666),
    # all of memory: (1000 + 1000)*2/3 = 1333.
    ("all memory", proc(10, TP), TP, TP, 1333),
]


@pytest.mark.parametrize(("task", "tp", "badness", "score"), [row[1:] for row in V6],
                         ids=[row[0] for row in V6])
def test_v6_formula(task: Task, tp: int, badness: int | None, score: int) -> None:
    assert (badness, score) == (oom_badness_v6(task, tp), oom_score_v6(task, tp))


def test_formulas_differ_where_they_should() -> None:
    """Root: 4.6 discounts 3% (1000 -> 970), v6 does not.  Negative: 4.6 floors at 1, v6 goes
    below 0.  Scale: the same 1000-page task reads 3 (of 1000) on 4.6 and 668 (of 2000) on
    v6.  Zero-size eligible task: 4.6 says 1, v6 says 0."""
    root = proc(10, 1000, cap_sys_admin=True)
    assert (970, 1000) == (OOM46.oom_badness(root, TP), oom_badness_v6(root, TP))
    low = proc(10, 100, oom_score_adj=-1)
    assert (1, -162) == (OOM46.oom_badness(low, TP), oom_badness_v6(low, TP))
    plain = proc(10, 1000)
    assert (3, 668) == (OOM46.oom_score(plain, TP), oom_score_v6(plain, TP))
    empty = proc(10, 0)
    assert (1, 0) == (OOM46.oom_badness(empty, TP), oom_badness_v6(empty, TP))


# ---------------------------------------------------------------------------------------------
# select_bad_process
# ---------------------------------------------------------------------------------------------

#: 2^64 - 1000 is ULONG_MAX * 1000 modulo 2^64; / 2^18 is 2^46 - 1; as unsigned int 2^32 - 1.
ORIGIN_SCORE = (1 << 32) - 1

#: (id, tasks, sysrq, expected: Choice(pid, tid, points, score), ABORT or None)
SELECT: list[tuple[str, list[Task], bool, object]] = [
    # 300 is the most; 300000 / 262144 = 1.
    ("largest", [proc(10, 100), proc(11, 300), proc(12, 200)], False, Choice(11, 11, 300, 1)),
    # init and the kernel thread are skipped; 5 pages -> score 0.
    ("skip unkillable", [proc(1, 10000), proc(2, 0, mm=None, kthread=True), proc(10, 5)],
     False, Choice(10, 10, 5, 0)),
    # -1000 scores 0 and is skipped, however big.
    ("skip -1000", [proc(20, 9999, oom_score_adj=-1000), proc(21, 1)], False,
     Choice(21, 21, 1, 0)),
    # a TIF_MEMDIE thread anywhere aborts the scan, even after a good candidate.
    ("abort while dying", [proc(10, 5000), proc(11, 1, memdie=(11,))], False, ABORT),
    # sysrq does not wait for the dying task: 5000 wins.
    ("sysrq ignores dying", [proc(10, 5000), proc(11, 1, memdie=(11,))], True,
     Choice(10, 10, 5000, 19)),  # 5000000 / 262144 = 19.07
    # init is skipped before its TIF_MEMDIE is looked at: no abort.
    ("dying init ignored", [proc(1, 10, memdie=(1,)), proc(10, 7)], False,
     Choice(10, 10, 7, 0)),
    # equal single-threaded processes: the first listed stays (it is a group leader).
    ("tie first wins", [proc(10, 50), proc(11, 50)], False, Choice(10, 10, 50, 0)),
    # the leader has left the mm: thread 31 is chosen, then 32 (equal, 31 not a leader)
    # replaces it.
    ("tie non-leader replaced", [proc(30, 50, tids=(30, 31, 32), no_mm=(30,))], False,
     Choice(30, 32, 50, 0)),
    # leader holds the mm: 30 stays chosen against its own thread 31.
    ("tie leader kept", [proc(30, 50, tids=(30, 31))], False, Choice(30, 30, 50, 0)),
    # chosen thread 41 is not a leader, so process 50 with equal points takes over.
    ("tie across processes", [proc(40, 50, tids=(40, 41), no_mm=(40,)), proc(50, 50)],
     False, Choice(50, 50, 50, 0)),
    # OOM_FLAG_ORIGIN: taken at ULONG_MAX even though 1000 pages are bigger.
    ("origin first", [proc(10, 1, oom_origin=True), proc(11, 1000)], False,
     Choice(10, 10, ULONG_MAX, ORIGIN_SCORE)),
    # nothing killable at all.
    ("nobody", [proc(1, 100), proc(2, 0, mm=None, kthread=True),
                proc(10, 100, oom_score_adj=-1000)], False, None),
    # admin discount decides: 1020 - 30 = 990 < 1000.
    ("admin loses", [proc(10, 1020, cap_sys_admin=True), proc(11, 1000)], False,
     Choice(11, 11, 1000, 3)),  # 1000000 / 262144 = 3.8
    # adj decides: 100 + 262 = 362 > 300.
    ("adj wins", [proc(10, 300), proc(11, 100, oom_score_adj=1)], False,
     Choice(11, 11, 362, 1)),  # 362000 / 262144 = 1.38
]


def select_failures(impl: Oom46) -> list[str]:
    out = []
    for name, tasks, sysrq, want in SELECT:
        got = impl.select_bad_process(tasks, TP, sysrq)
        if got != want:
            out.append(f"{name}: got {got}, want {want}")
    return out


@pytest.mark.parametrize(("tasks", "sysrq", "want"), [row[1:] for row in SELECT],
                         ids=[row[0] for row in SELECT])
def test_select_bad_process(tasks: list[Task], sysrq: bool, want: object) -> None:
    assert want == OOM46.select_bad_process(tasks, TP, sysrq)


# ---------------------------------------------------------------------------------------------
# oom_kill_process
# ---------------------------------------------------------------------------------------------

#: (id, tasks, (pid, tid) chosen, expected Kill)
KILL: list[tuple[str, list[Task], tuple[int, int], Kill]] = [
    # children 11 (10 pages) and 12 (20 pages) have their own mms: 12 dies for its parent.
    ("worst child", [proc(10, 1000, children=(11, 12)), proc(11, 10), proc(12, 20)],
     (10, 10), Kill((12, 12), (12,), reap=True)),
    # a child of 1 page (badness 1 > 0) still saves a 10000-page parent.
    ("any positive child", [proc(10, 10000, children=(11,)), proc(11, 0)], (10, 10),
     Kill((11, 11), (11,), reap=True)),
    # the only child shares the parent's mm (CLONE_VM): skipped as a sacrifice, but it uses
    # the victim's mm, so it gets SIGKILL too.
    ("child shares mm", [proc(10, 1000, children=(11,)), proc(11, 1000, mm=10)], (10, 10),
     Kill((10, 10), (10, 11), reap=True)),
    # a -1000 child scores 0: the parent dies.
    ("protected child", [proc(10, 1000, children=(11,)), proc(11, 5000, oom_score_adj=-1000)],
     (10, 10), Kill((10, 10), (10,), reap=True)),
    # equal children: strictly greater replaces, so the first (11) is kept.
    ("equal children", [proc(10, 1, children=(11, 12)), proc(11, 30), proc(12, 30)],
     (10, 10), Kill((11, 11), (11,), reap=True)),
    # a child with no mm left scores 0: the parent dies.
    ("child without mm", [proc(10, 5, children=(11,)), proc(11, 50, no_mm=(11,))], (10, 10),
     Kill((10, 10), (10,), reap=True)),
    # process 20 shares the victim's mm with adj -1000: not killed, and no reaping.
    ("protected sharer", [proc(10, 100), proc(20, 100, mm=10, oom_score_adj=-1000)],
     (10, 10), Kill((10, 10), (10,), reap=False)),
    # a kernel thread using the mm (use_mm) blocks reaping the same way.
    ("kthread sharer", [proc(10, 100), proc(3, 100, mm=10, kthread=True)], (10, 10),
     Kill((10, 10), (10,), reap=False)),
    # the chosen thread is already exiting: only marked, nobody signalled or reaped.
    ("already exiting", [proc(10, 100, exiting=(10,), children=(11,)), proc(11, 50)],
     (10, 10), Kill((10, 10), already_exiting=True)),
    # dumping core is not "exiting soon": children are considered as usual.
    ("coredump", [proc(10, 100, exiting=(10,), coredump=True, children=(11,)), proc(11, 50)],
     (10, 10), Kill((11, 11), (11,), reap=True)),
    # the victim is the first thread that still has the mm: leader 10 left, 11 marked.
    ("victim thread", [proc(10, 100, tids=(10, 11, 12), no_mm=(10,))], (10, 12),
     Kill((10, 11), (10,), reap=True)),
]


def kill_failures(impl: Oom46) -> list[str]:
    out = []
    for name, tasks, (pid, tid), want in KILL:
        got = impl.oom_kill_process(tasks, pid, tid, TP)
        if got != want:
            out.append(f"{name}: got {got}, want {want}")
    return out


@pytest.mark.parametrize(("tasks", "chosen", "want"), [row[1:] for row in KILL],
                         ids=[row[0] for row in KILL])
def test_oom_kill_process(tasks: list[Task], chosen: tuple[int, int], want: Kill) -> None:
    assert want == OOM46.oom_kill_process(tasks, *chosen, TP)


def test_apply_kill_marks_victim_and_signals() -> None:
    tasks = [proc(10, 100, tids=(10, 11)), proc(20, 100, mm=10), proc(30, 5)]
    after = apply_kill(tasks, Kill((10, 10), (10, 20), reap=True))
    assert [True, True, False] == [t.sigkill for t in after]
    assert [True, False] == [t.memdie for t in after[0].threads]
    assert tasks[2] == after[2]


def test_reaped_victim_is_never_chosen_again() -> None:
    """After reaping, adj is -1000 and TIF_MEMDIE is gone: the next OOM takes the other
    process instead of aborting or choosing the reaped one again."""
    tasks = [proc(10, 1000, memdie=(10,)), proc(11, 5)]
    assert ABORT == OOM46.select_bad_process(tasks, TP)
    reaped = [after_reap(tasks[0], 10), tasks[1]]
    assert -1000 == reaped[0].oom_score_adj
    assert Choice(11, 11, 5, 0) == OOM46.select_bad_process(reaped, TP)


# ---------------------------------------------------------------------------------------------
# out_of_memory and pagefault_out_of_memory
# ---------------------------------------------------------------------------------------------

BIG = [proc(1, 100), proc(10, 10), proc(11, 1000)]

#: (id, tasks, context, outcome, returned, victim (pid, tid) or None, panic message or None)
OOM: list[tuple[str, list[Task], OomContext, Outcome, bool, object, str | None]] = [
    ("disabled", BIG, OomContext(TP, (10, 10), oom_killer_disabled=True),
     Outcome.DISABLED, False, None, None),
    # current (10) has SIGKILL pending: it is marked, 11 is spared.
    ("current killed", [proc(1, 100), proc(10, 10, sigkill=True), proc(11, 1000)],
     OomContext(TP, (10, 10)), Outcome.CURRENT, True, (10, 10), None),
    # current exiting (no coredump): marked.
    ("current exiting", [proc(1, 100), proc(10, 10, exiting=(10,)), proc(11, 1000)],
     OomContext(TP, (10, 10)), Outcome.CURRENT, True, (10, 10), None),
    # exiting but dumping core: the biggest (11) is killed instead.
    ("current dumping", [proc(1, 100), proc(10, 10, exiting=(10,), coredump=True),
                         proc(11, 1000)],
     OomContext(TP, (10, 10)), Outcome.KILLED, True, (11, 11), None),
    ("panic_on_oom 1", BIG, OomContext(TP, (10, 10), panic_on_oom=1), Outcome.PANIC, True,
     None, "Out of memory: system-wide panic_on_oom is enabled"),
    ("panic_on_oom 2", BIG, OomContext(TP, (10, 10), panic_on_oom=2), Outcome.PANIC, True,
     None, "Out of memory: compulsory panic_on_oom is enabled"),
    # sysrq never panics for panic_on_oom.
    ("panic_on_oom sysrq", BIG, OomContext(TP, None, sysrq=True, panic_on_oom=1),
     Outcome.KILLED, True, (11, 11), None),
    # oom_kill_allocating_task: current (10 pages) dies although 11 is bigger.
    ("allocating task", BIG, OomContext(TP, (10, 10), oom_kill_allocating_task=True),
     Outcome.KILLED, True, (10, 10), None),
    # ... unless current is protected: back to selection, 11 dies.
    ("allocating task protected", [proc(1, 100), proc(10, 10, oom_score_adj=-1000),
                                   proc(11, 1000)],
     OomContext(TP, (10, 10), oom_kill_allocating_task=True), Outcome.KILLED, True,
     (11, 11), None),
    ("normal", BIG, OomContext(TP, (10, 10)), Outcome.KILLED, True, (11, 11), None),
    # a victim is still dying: nothing killed, but "progress" is reported.
    ("victim in flight", [proc(10, 10), proc(11, 1000, memdie=(11,))],
     OomContext(TP, (10, 10)), Outcome.ABORTED, True, None, None),
    # nobody killable: the panic of 4.6, as a result.
    ("no killable", [proc(1, 100), proc(2, 0, mm=None, kthread=True)],
     OomContext(TP, (2, 2)), Outcome.PANIC, True, None, PANIC_NO_KILLABLE),
    ("no killable sysrq", [proc(1, 100)], OomContext(TP, None, sysrq=True),
     Outcome.NONE_SYSRQ, True, None, None),
]


def oom_failures(impl: Oom46) -> list[str]:
    out = []
    for name, tasks, ctx, outcome, returned, victim, panic in OOM:
        got = impl.out_of_memory(tasks, ctx)
        got_victim = got.kill.victim if got.kill is not None else None
        if (got.outcome, got.returned, got_victim, got.panic) != (outcome, returned, victim,
                                                                   panic):
            out.append(f"{name}: got {got}")
    return out


@pytest.mark.parametrize("row", OOM, ids=[row[0] for row in OOM])
def test_out_of_memory(row: tuple[Any, ...]) -> None:
    _name, tasks, ctx, outcome, returned, victim, panic = row
    got = OOM46.out_of_memory(tasks, ctx)
    assert (outcome, returned, victim, panic) == (
        got.outcome, got.returned, got.kill.victim if got.kill else None, got.panic)


def test_pagefault_oom_is_never_sysrq() -> None:
    """The fault path runs the ordinary OOM: with nobody killable it panics even if the
    context claimed sysrq."""
    got = pagefault_out_of_memory([proc(1, 100)], OomContext(TP, (1, 1), sysrq=True))
    assert (Outcome.PANIC, PANIC_NO_KILLABLE) == (got.outcome, got.panic)


# ---------------------------------------------------------------------------------------------
# When an allocation may call the OOM killer
# ---------------------------------------------------------------------------------------------

NOFAIL = gfp.__GFP_NOFAIL
#: (id, gfp mask, order, current has TIF_MEMDIE, calls out_of_memory)
MAY_OOM = [
    ("GFP_KERNEL order 0", gfp.GFP_KERNEL, 0, False, True),
    ("order 3 is not costly", gfp.GFP_KERNEL, 3, False, True),
    ("order 4 is costly", gfp.GFP_KERNEL, 4, False, False),
    ("costly but NOFAIL", gfp.GFP_KERNEL | NOFAIL, 4, False, True),
    ("no __GFP_FS", gfp.GFP_NOFS, 0, False, False),
    ("NOFS but NOFAIL", gfp.GFP_NOFS | NOFAIL, 0, False, True),
    ("ZONE_DMA", gfp.GFP_KERNEL | gfp.__GFP_DMA, 0, False, False),
    ("ZONE_DMA32", gfp.GFP_KERNEL | gfp.__GFP_DMA32, 0, False, False),
    ("ZONE_MOVABLE", gfp.GFP_HIGHUSER_MOVABLE, 0, False, True),
    ("THISNODE", gfp.GFP_KERNEL | gfp.__GFP_THISNODE, 0, False, False),
    ("NORETRY", gfp.GFP_KERNEL | gfp.__GFP_NORETRY, 0, False, False),
    ("no direct reclaim", gfp.GFP_ATOMIC, 0, False, False),
    ("no direct reclaim, NOFAIL", gfp.GFP_ATOMIC | NOFAIL, 0, False, False),
    ("caller is a victim", gfp.GFP_KERNEL, 0, True, False),
    ("caller is a victim, NOFAIL", gfp.GFP_KERNEL | NOFAIL, 0, True, True),
]


@pytest.mark.parametrize(("mask", "order", "memdie", "want"), [r[1:] for r in MAY_OOM],
                         ids=[r[0] for r in MAY_OOM])
def test_alloc_may_oom(mask: int, order: int, memdie: bool, want: bool) -> None:
    assert want == alloc_may_oom(mask, order, memdie)


# ---------------------------------------------------------------------------------------------
# /proc writes: bad input gets 4.6's errno and changes nothing
# ---------------------------------------------------------------------------------------------

EINVAL, EACCES = -Errno.EINVAL, -Errno.EACCES

#: (id, task, value, CAP_SYS_RESOURCE, result, oom_score_adj after, oom_score_adj_min after)
ADJ_WRITES = [
    ("max", proc(10), 1000, False, 0, 1000, 0),
    ("above max", proc(10), 1001, False, EINVAL, 0, 0),
    ("below min", proc(10), -1001, True, EINVAL, 0, 0),
    # lowering below oom_score_adj_min (0) needs CAP_SYS_RESOURCE.
    ("negative unprivileged", proc(10), -1, False, EACCES, 0, 0),
    # with it, the value and the minimum both move.
    ("negative privileged", proc(10), -1, True, 0, -1, -1),
    # lowering that stays above the minimum needs nothing: 500 -> 100.
    ("lower above min", proc(10, oom_score_adj=500), 100, False, 0, 100, 0),
    ("-1000 privileged", proc(10), -1000, True, 0, -1000, -1000),
    # a kernel thread has no mm: refused.
    ("no mm", proc(2, mm=None, kthread=True), 5, False, EINVAL, 0, 0),
    # the leader left the mm: refused although another thread holds it.
    ("leader without mm", proc(10, tids=(10, 11), no_mm=(10,)), 5, False, EINVAL, 0, 0),
]


def adj_write_failures(impl: Oom46) -> list[str]:
    out = []
    for name, task, value, cap, result, adj, adj_min in ADJ_WRITES:
        got, after = impl.oom_score_adj_write(task, value, cap)
        if (got, after.oom_score_adj, after.oom_score_adj_min) != (result, adj, adj_min):
            out.append(f"{name}: got {got} {after}")
    return out


@pytest.mark.parametrize("row", ADJ_WRITES, ids=[r[0] for r in ADJ_WRITES])
def test_oom_score_adj_write(row: tuple[Any, ...]) -> None:
    _name, task, value, cap, result, adj, adj_min = row
    got, after = OOM46.oom_score_adj_write(task, value, cap)
    assert (result, adj, adj_min) == (got, after.oom_score_adj, after.oom_score_adj_min)
    if result:
        assert task == after


#: (id, starting adj, oom_adj written, CAP_SYS_RESOURCE, result, adj after)
OOM_ADJ_WRITES = [
    ("15 is max", 0, 15, False, 0, 1000),
    ("1 -> 1000/17 = 58.8 -> 58", 0, 1, False, 0, 58),
    ("8 -> 8000/17 = 470.6 -> 470", 0, 8, False, 0, 470),
    ("16 out of range", 0, 16, False, EINVAL, 0),
    ("-18 out of range", 0, -18, True, EINVAL, 0),
    # -17 is OOM_DISABLE: -17000/17 = -1000, needs the cap to go below the current 0.
    ("-17 privileged", 0, -17, True, 0, -1000),
    ("-17 unprivileged", 0, -17, False, EACCES, 0),
    # the legacy file compares with the current value: 470 -> 58 is a lowering.
    ("lowering vs current", 470, 1, False, EACCES, 470),
    # -1 -> -1000/17 = -58.8 truncates to -58.
    ("-1 truncates toward 0", 0, -1, True, 0, -58),
]


@pytest.mark.parametrize("row", OOM_ADJ_WRITES, ids=[r[0] for r in OOM_ADJ_WRITES])
def test_oom_adj_write(row: tuple[Any, ...]) -> None:
    _name, start, value, cap, result, adj = row
    got, after = OOM46.oom_adj_write(proc(10, oom_score_adj=start), value, cap)
    assert (result, adj) == (got, after.oom_score_adj)


@pytest.mark.parametrize(("adj", "want"), [
    (1000, 15),  # special-cased
    (58, 0),  # 58*17/1000 = 0.986
    (470, 7),  # 7.99
    (-58, 0),  # -0.986 truncates to 0, not -1
    (-1000, -17),
    (999, 16),  # 16.98: the only way to read 16
])
def test_oom_adj_read(adj: int, want: int) -> None:
    assert want == OOM46.oom_adj_read(proc(10, oom_score_adj=adj))


#: every table's failure lister, for tests/refmodel/test_oom_mutants.py
TABLES: dict[str, Callable[[Oom46], list[str]]] = {
    "badness": badness_failures,
    "score": score_failures,
    "select": select_failures,
    "kill": kill_failures,
    "out_of_memory": oom_failures,
    "oom_score_adj_write": adj_write_failures,
}


def test_reference_passes_every_table() -> None:
    """The listers themselves: the reference fails no row (so a mutant's failures are its
    own)."""
    assert {name: [] for name in TABLES} == {name: f(OOM46) for name, f in TABLES.items()}
