"""fastmodel.oom is observably identical to refmodel.oom: same results from every method.

The hand tables of ``tests/refmodel/test_oom.py`` (worked out from 4.6, not from either model)
run against FastOom first; then random task lists, built to reach every edge the formula and
the walk have (adj -1000..1000 and its ends, root, kernel threads, init, dying and exiting
threads, leaders without an mm, children, shared mms, OOM_FLAG_ORIGIN, core dumps, totalpages
from 1 page to 2^80, counters past int64), go through every public function of both.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmodel import oom as fast
from fastmodel.oom import FAST_OOM, FastOom, TaskTable, badness_array, select_by_arrays
from refmodel import oom as ref
from refmodel.oom import OOM46, Oom46
from specs import gfp
from specs.oom import ULONG_MAX, Choice, Kill, OomContext, Task, Thread
from tests.refmodel.test_oom import (
    MAY_OOM,
    OOM_ADJ_WRITES,
    TABLES,
    TP,
    V6,
    proc,
)

#: FastOom is duck-typed against Oom46 (same methods), which is all the listers use.
FAST_AS_REF = cast("Oom46", FAST_OOM)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_hand_table(table: str) -> None:
    """FastOom gets every row of each hand-computed 4.6 table right."""
    assert [] == TABLES[table](FAST_AS_REF)


def test_hand_rows_outside_the_listers() -> None:
    """The tables the listers do not cover: the allocator's gate, oom_adj writes, the v6
    formula, the fault path and the reaper, against the same hand-computed values."""
    for _name, mask, order, memdie, want in MAY_OOM:
        assert want == fast.alloc_may_oom(mask, order, memdie), _name
    for name, start, value, cap, result, adj in OOM_ADJ_WRITES:
        got, after = FAST_OOM.oom_adj_write(proc(10, oom_score_adj=start), value, cap)
        assert (result, adj) == (got, after.oom_score_adj), name
    for name, task, tp, badness, score in V6:
        pair = (fast.oom_badness_v6(task, tp), fast.oom_score_v6(task, tp))
        assert (badness, score) == pair, name
    # 1000 -> 15 (special case); 999*17/1000 = 16.98 -> 16; -58*17/1000 = -0.99 -> 0.
    assert [15, 16, 0, -17] == [FAST_OOM.oom_adj_read(proc(10, oom_score_adj=a))
                                for a in (1000, 999, -58, -1000)]
    tasks = [proc(10, 1000, memdie=(10,)), proc(11, 5)]
    reaped = [fast.after_reap(tasks[0], 10), tasks[1]]
    assert (-1000, Choice(11, 11, 5, 0)) == (reaped[0].oom_score_adj,
                                             FAST_OOM.select_bad_process(reaped, TP))


def test_same_public_api() -> None:
    """FastOom offers exactly Oom46's public methods, with the same signatures, and the
    module exports the reference module's public functions, so either plugs in."""
    def methods(cls: type) -> dict[str, inspect.Signature]:
        return {name: inspect.signature(member) for name, member in vars(cls).items()
                if callable(member) and not name.startswith("_")}

    assert methods(Oom46) == methods(FastOom)
    for name in ("apply_kill", "after_reap", "alloc_may_oom", "pagefault_out_of_memory",
                 "oom_badness_v6", "oom_score_v6", "oom_badness", "oom_score",
                 "select_bad_process", "oom_kill_process", "out_of_memory",
                 "oom_score_adj_write", "oom_adj_write", "oom_adj_read"):
        assert inspect.signature(getattr(ref, name)) == inspect.signature(getattr(fast, name))


def test_badness_array_paths() -> None:
    """Small counters take the int64 path; a counter past int64 (2^70) or an adjustment
    term past 2^61 (adj 1000 at totalpages 2^64 - 1) takes the exact one.  2^70 + 2 pages
    as an unsigned int is 2, so the 7-page process wins the selection."""
    small = [proc(10, 100), proc(11, 200, oom_score_adj=-1000), proc(1, 50)]
    assert np.int64 == badness_array(small, TP).dtype
    assert [100, 0, 0] == badness_array(small, TP).tolist()
    huge = [proc(10, 1 << 70, nr_ptes=2), proc(11, 7)]
    assert object == badness_array(huge, TP).dtype
    assert [(1 << 70) + 2, 7] == badness_array(huge, TP).tolist()
    assert Choice(11, 11, 7, 0) == select_by_arrays(TaskTable.of(huge), TP)
    wide = [proc(10, 5, oom_score_adj=1000)]
    assert [5 + 1000 * (ULONG_MAX // 1000)] == badness_array(wide, ULONG_MAX).tolist()


# ---------------------------------------------------------------------------------------------
# Random task lists
# ---------------------------------------------------------------------------------------------

totalpages = st.one_of(
    st.sampled_from([1, 999, 1000, 1001, 2500, TP, 1 << 40, (1 << 63) - 1, ULONG_MAX, 1 << 80]),
    st.integers(1, 1 << 22), st.integers(1, ULONG_MAX))
counters = st.one_of(
    st.integers(0, 3000),
    st.sampled_from([0, 1, 33, 34, 100, (1 << 32) - 1, 1 << 32, 1 << 59, (1 << 63) - 1,
                     1 << 63, 1 << 70]))
adjs = st.integers(-1000, 1000) | st.sampled_from([-1000, -999, -1, 0, 1, 999, 1000])


def rarely(p: int = 6) -> st.SearchStrategy[bool]:
    return st.integers(0, p - 1).map(lambda x: x == 0)


@st.composite
def task_lists(draw: st.DrawFn) -> list[Task]:
    pids = draw(st.lists(st.integers(1, 24), max_size=9, unique=True))
    duplicate = draw(rarely(8))
    if pids and duplicate:
        pids.append(draw(st.sampled_from(pids)))  # a duplicate pid: lookups take the first
    shared = {mm: draw(st.tuples(counters, counters, counters, counters)) for mm in (100, 101)}
    tasks = []
    for pid in pids:
        mm = draw(st.sampled_from([pid, pid, pid, 100, 101, None]))
        rss, swap, ptes, pmds = (shared[mm] if mm in shared else
                                 draw(st.tuples(counters, counters, counters, counters)))
        tids = [pid] if draw(st.integers(0, 3)) else []
        tids += [pid * 100 + i for i in range(draw(st.integers(0, 2)))]
        threads = tuple(Thread(tid, has_mm=not draw(rarely(4)), memdie=draw(rarely(12)),
                               exiting=draw(rarely(5))) for tid in draw(st.permutations(tids)))
        tasks.append(Task(
            pid, threads, mm, rss=rss, swapents=swap, nr_ptes=ptes, nr_pmds=pmds,
            nr_puds=draw(st.integers(0, 3)), oom_score_adj=draw(adjs),
            oom_score_adj_min=draw(adjs), cap_sys_admin=draw(rarely(3)),
            kthread=mm is None and draw(st.booleans()), oom_origin=draw(rarely(10)),
            coredump=draw(rarely()), sigkill=draw(rarely()),
            children=tuple(draw(st.lists(st.sampled_from([*pids, 99]), max_size=3)))))
    return tasks


def same(name: str, want: Any, got: Any) -> None:
    assert want == got, f"{name}: refmodel {want!r}, fastmodel {got!r}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tasks=task_lists(), tp=totalpages, data=st.data())
def test_random_tasks_match_refmodel(tasks: list[Task], tp: int, data: st.DataObject) -> None:
    """Every method of FastOom returns what Oom46 returns on the same random task list."""
    same("badness_array", [OOM46.oom_badness(t, tp) for t in tasks],
         badness_array(tasks, tp).tolist())
    table = TaskTable.of(tasks)
    same("badness_array(table)", [OOM46.oom_badness(t, tp) for t in tasks],
         badness_array(table, tp).tolist())
    for sysrq in (False, True):
        want = OOM46.select_bad_process(tasks, tp, sysrq)
        same(f"select sysrq={sysrq}", want, FAST_OOM.select_bad_process(tasks, tp, sysrq))
        same(f"select_by_arrays sysrq={sysrq}", want, select_by_arrays(table, tp, sysrq))
    mms = [None, 100, 101, *(t.pid for t in tasks)]
    for task in tasks:
        for method in ("oom_unkillable_task", "find_task_mm", "oom_adj_read"):
            same(method, getattr(OOM46, method)(task), getattr(FAST_OOM, method)(task))
        for method in ("oom_badness", "oom_score", "oom_badness_v6", "oom_score_v6"):
            owner = OOM46 if hasattr(OOM46, method) else None
            want = (getattr(owner, method) if owner else getattr(ref, method))(task, tp)
            got = (getattr(FAST_OOM, method) if owner else getattr(fast, method))(task, tp)
            same(method, want, got)
        same("sacrifice_child", OOM46.sacrifice_child(tasks, task, tp),
             FAST_OOM.sacrifice_child(tasks, task, tp))
        for mm in mms:
            same("process_shares_mm", OOM46.process_shares_mm(task, mm),
                 FAST_OOM.process_shares_mm(task, mm))
        for thread in (*task.threads, Thread(999)):
            same("task_will_free_mem", OOM46.task_will_free_mem(task, thread),
                 FAST_OOM.task_will_free_mem(task, thread))
            for sysrq in (False, True):
                same("scan", OOM46.oom_scan_process_thread(task, thread, sysrq),
                     FAST_OOM.oom_scan_process_thread(task, thread, sysrq))
            same("kill", OOM46.oom_kill_process(tasks, task.pid, thread.tid, tp),
                 FAST_OOM.oom_kill_process(tasks, task.pid, thread.tid, tp))
            same("after_reap", ref.after_reap(task, thread.tid), fast.after_reap(task, thread.tid))
        value = data.draw(adjs | st.sampled_from([-1001, 1001, 5000]), label="adj write")
        legacy = data.draw(st.integers(-18, 16), label="oom_adj write")
        cap = data.draw(st.booleans(), label="CAP_SYS_RESOURCE")
        same("oom_score_adj_write", OOM46.oom_score_adj_write(task, value, cap),
             FAST_OOM.oom_score_adj_write(task, value, cap))
        same("oom_adj_write", OOM46.oom_adj_write(task, legacy, cap),
             FAST_OOM.oom_adj_write(task, legacy, cap))
    same("kill of a missing pid", OOM46.oom_kill_process(tasks, 98, 98, tp),
         FAST_OOM.oom_kill_process(tasks, 98, 98, tp))

    members = [(t.pid, th.tid) for t in tasks for th in t.threads]
    current = data.draw(st.sampled_from([None, (98, 98), *members]), label="current")
    ctx = OomContext(tp, current, sysrq=data.draw(rarely(4)),
                     panic_on_oom=data.draw(st.sampled_from([0, 0, 0, 1, 2])),
                     oom_kill_allocating_task=data.draw(rarely(3)),
                     oom_killer_disabled=data.draw(rarely(10)))
    result = OOM46.out_of_memory(tasks, ctx)
    same("out_of_memory", result, FAST_OOM.out_of_memory(tasks, ctx))
    same("pagefault_out_of_memory", ref.pagefault_out_of_memory(tasks, ctx),
         fast.pagefault_out_of_memory(tasks, ctx))
    kill = result.kill if result.kill is not None else Kill(None)
    same("apply_kill", ref.apply_kill(tasks, kill), fast.apply_kill(tasks, kill))


GFP_BITS = [gfp.__GFP_DMA, gfp.__GFP_HIGHMEM, gfp.__GFP_DMA32, gfp.__GFP_MOVABLE,
            gfp.__GFP_DIRECT_RECLAIM, gfp.__GFP_KSWAPD_RECLAIM, gfp.__GFP_IO, gfp.__GFP_FS,
            gfp.__GFP_NOFAIL, gfp.__GFP_NORETRY, gfp.__GFP_THISNODE, gfp.__GFP_REPEAT]


@settings(max_examples=300, deadline=None)
@given(bits=st.sets(st.sampled_from(GFP_BITS)), order=st.integers(-1, 11),
       memdie=st.booleans())
def test_alloc_may_oom_matches_refmodel(bits: set[int], order: int, memdie: bool) -> None:
    """The allocator's gate agrees on every combination of the bits it reads."""
    mask = sum(bits)
    assert ref.alloc_may_oom(mask, order, memdie) == fast.alloc_may_oom(mask, order, memdie)
