"""Operation rules of the OOM killer in the composed kernel, OOM-R1 .. OOM-R8
(``specs/oom.md``).

A rule judges one step from its arguments, its result and the composed snapshots before and
after it.  Every out_of_memory call a step made is in the kernel's OOM log
(``KernelView.oom.events``) with the task descriptors it decided on; the rules check those
descriptors against the views before the step and recompute the decision from them with the
formula of ``invariants/oom.py``, so they hold in contract mode for any kernel.
"""

from __future__ import annotations

from typing import Any

import attrs

from invariants.fault import FaultSnapshot, capped, present
from invariants.oom import (
    NEEDS,
    NEEDS_COMMIT,
    alloc_may_oom,
    badness,
    reapable_ptes,
    task_of,
)
from invariants.registry import step_rule
from specs import pte as pt
from specs.errno import Errno
from specs.kernel import SIGKILL, VM_FAULT_OOM, FaultResult, OomEvent, ProcessView
from specs.machine import PAGE_SHIFT, MachineConfig
from specs.oom import OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN, PANIC_NO_KILLABLE, Outcome, Task
from specs.vma import (
    MAP_FIXED,
    MREMAP_FIXED,
    OVERCOMMIT_NEVER,
    MmView,
    ProcessConfig,
    page_align,
    process_config,
)

#: operations a process makes itself: (operation, how the acting pid is found)
ACTING_PID = ("fork", "open_file", "mmap", "munmap", "mprotect", "mremap", "brk")
ACTING_CPU = ("read", "write", "copy_from_user", "copy_to_user")
ALLOCATING = ("spawn", *ACTING_PID, *ACTING_CPU)
#: operations that may charge vm_committed_as (a user access grows a stack)
COMMITTING = ("spawn", "fork", "mmap", "mremap", "brk", "mprotect", *ACTING_CPU)


@attrs.frozen
class OomStep:
    """One operation with the composed snapshots before and after it."""

    op: str
    args: dict[str, Any]
    result: Any
    before: FaultSnapshot
    after: FaultSnapshot


def new_events(step: OomStep) -> tuple[OomEvent, ...]:
    """The out_of_memory calls this step made."""
    before, after = step.before.view.oom, step.after.view.oom
    if after is None:
        return ()
    return after.events[len(before.events) if before is not None else 0:]


def acting(step: OomStep) -> ProcessView | None:
    """The process the operation runs as (current), from the view before the step."""
    pid = 0
    if step.op in ACTING_PID:
        pid = step.args.get("pid", 0)
    elif step.op in ACTING_CPU:
        running = step.before.view.running
        cpu = step.args.get("cpu", -1)
        pid = running[cpu] if 0 <= cpu < len(running) else 0
    return step.before.view.by_pid.get(pid)


def totalpages(snap: FaultSnapshot) -> int:
    """totalram_pages: every managed page (no swap)."""
    return sum(zone.managed_pages for zone in snap.pages.zones)


def tasks_before(snap: FaultSnapshot) -> dict[int, Task]:
    """pid -> the descriptor built from the views alone."""
    procs = snap.view.processes
    return {p.pid: task_of(p, snap.tables.by_mm.get(p.mm), procs) for p in procs}


def expected_choice(tasks: tuple[Task, ...], event: OomEvent) -> tuple[Outcome, int | None]:
    """What 4.6's out_of_memory decides on these descriptors (default sysctls, no sysrq):
    a dying current is only marked; any TIF_MEMDIE task aborts the scan; otherwise the
    first task of the highest badness, or a panic when nobody is eligible.  [4.6:
    mm/oom_kill.c out_of_memory, select_bad_process, oom_scan_process_thread]"""
    current = event.ctx.current
    cur = next((t for t in tasks if current is not None and t.pid == current[0]), None)
    if cur is not None and cur.mm is not None and cur.sigkill:
        return Outcome.CURRENT, cur.pid
    if any(t.pid != 1 and not t.kthread and any(th.memdie for th in t.threads) for t in tasks):
        return Outcome.ABORTED, None
    best, best_points = None, 0
    for task in tasks:
        points = badness(task, event.ctx.totalpages)
        if points > best_points:
            best, best_points = task.pid, points
    return (Outcome.PANIC, None) if best is None else (Outcome.KILLED, best)


def describe(task: Task, totalpages: int) -> str:
    return (f"pid {task.pid} (badness {badness(task, totalpages)}: rss {task.rss}, ptes "
            f"{task.nr_ptes}, pmds {task.nr_pmds}, adj {task.oom_score_adj}, admin "
            f"{task.cap_sys_admin})")


@step_rule("OOM-R1", "oom_score reports 4.6's badness in thousandths of memory",
           ops=("oom_score",), needs=NEEDS)
def oom_score_formula(step: OomStep) -> list[str]:
    """/proc/<pid>/oom_score is ``oom_badness * 1000 / totalpages`` with the badness
    recomputed from the views (RSS, page-table pages, the admin discount before the
    adjustment, ``totalpages / 1000`` divided first, the floor of 1, -1000 and init 0), and
    totalpages is every managed page.  [4.6: fs/proc/base.c proc_oom_score; mm/oom_kill.c
    oom_badness]"""
    problems = []
    total = totalpages(step.before)
    oom = step.before.view.oom
    if oom is not None and oom.totalpages != total:
        problems.append(f"the kernel's totalpages is {oom.totalpages}, but {total} pages are "
                        f"managed and there is no swap")
    task = tasks_before(step.before).get(step.args["pid"])
    if task is None:
        if step.result != -Errno.ESRCH:
            problems.append(f"oom_score of pid {step.args['pid']}, which does not exist, "
                            f"returned {step.result!r} instead of -ESRCH")
        return problems
    want = badness(task, total) * 1000 // total
    if step.result != want:
        problems.append(f"oom_score of {describe(task, total)} is {step.result!r}, want "
                        f"{want} (totalpages {total})")
    return problems


@step_rule("OOM-R2", "the OOM killer chooses the first eligible process of highest badness",
           ops=ALLOCATING, needs=NEEDS)
def victim_choice(step: OomStep) -> list[str]:
    """Every out_of_memory call of the step decided on true descriptors (the processes of
    the view before the step, with their counters, adjustments, credentials and flags, as
    changed by the step's earlier OOM calls; the current process's own counters may have
    grown within the step) and decided as 4.6 does: a dying current is only marked, a
    TIF_MEMDIE task anywhere aborts, otherwise the eligible task of highest badness is
    chosen (the first listed among equals; -1000, init and tasks without an mm never), and
    with nobody eligible the result is the panic, never a failure of the kernel."""
    events = new_events(step)
    if not events:
        return []
    problems: list[str] = []
    truth = tasks_before(step.before)
    flags = {pid: (t.sigkill, t.threads[0].memdie) for pid, t in truth.items()}
    total = totalpages(step.before)
    for n, event in enumerate(events):
        where = f"OOM call {n + 1} of the step ({event.trigger})"
        current = event.ctx.current[0] if event.ctx.current is not None else None
        problems.extend(_descriptors_true(event, truth, flags, current, total, where))
        outcome, pid = expected_choice(event.tasks, event)
        result = event.result
        got_pid = _decided_pid(result)
        if result.outcome is not outcome or (outcome in (Outcome.KILLED, Outcome.CURRENT)
                                             and got_pid != pid):
            ranked = sorted(event.tasks, key=lambda t: -badness(t, event.ctx.totalpages))
            problems.append(f"{where} ended {result.outcome.value} (pid {got_pid}), but 4.6 "
                            f"ends it {outcome.value} (pid {pid}); candidates: "
                            + "; ".join(describe(t, event.ctx.totalpages) for t in ranked[:4]))
        if outcome is Outcome.PANIC and result.panic != PANIC_NO_KILLABLE:
            problems.append(f"{where} found nobody to kill but panicked with "
                            f"{result.panic!r}")
        kill = result.kill
        if kill is not None:
            for killed in kill.sigkill:
                flags[killed] = (True, flags.get(killed, (False, False))[1])
            if kill.victim is not None:
                flags[kill.victim[0]] = (flags.get(kill.victim[0], (False, False))[0], True)
    return capped(problems)


def _decided_pid(result: Any) -> int | None:
    """The pid an out_of_memory result names: the chosen one, else the marked current."""
    if result.choice is not None:
        return int(result.choice.pid)
    if result.kill is not None and result.kill.victim is not None:
        return int(result.kill.victim[0])
    return None


def _descriptors_true(event: OomEvent, truth: dict[int, Task],
                      flags: dict[int, tuple[bool, bool]], current: int | None, total: int,
                      where: str) -> list[str]:
    """The descriptors an OOM call decided on are the processes as the views show them."""
    problems = []
    if event.ctx.totalpages != total:
        problems.append(f"{where} used totalpages {event.ctx.totalpages}, not {total}")
    if [t.pid for t in event.tasks] != sorted(truth):
        problems.append(f"{where} considered pids {[t.pid for t in event.tasks]}, but the "
                        f"processes were {sorted(truth)} (in creation order)")
    for task in event.tasks:
        real = truth.get(task.pid)
        if real is None:
            continue
        fields = ["oom_score_adj", "oom_score_adj_min", "cap_sys_admin", "mm", "children"]
        if task.pid != current:
            fields += ["rss", "swapents", "nr_ptes", "nr_pmds"]
        wrong = [f"{name} {getattr(task, name)!r} (view: {getattr(real, name)!r})"
                 for name in fields if getattr(task, name) != getattr(real, name)]
        sigkill, memdie = flags.get(task.pid, (False, False))
        if task.sigkill != sigkill or task.threads[0].memdie != memdie:
            wrong.append(f"sigkill/memdie {task.sigkill}/{task.threads[0].memdie} (expected "
                         f"{sigkill}/{memdie})")
        if wrong:
            problems.append(f"{where} saw pid {task.pid} with " + ", ".join(wrong))
    return problems


@step_rule("OOM-R3", "the victim is the chosen process's worst child with its own mm, if any",
           ops=ALLOCATING, needs=NEEDS)
def child_sacrifice(step: OomStep) -> list[str]:
    """When out_of_memory kills, the victim is the chosen process's first child (fork
    order) of highest badness among those with another mm and a badness above 0, else the
    chosen process itself; after the step the victim has SIGKILL pending and TIF_MEMDIE,
    and is queued for the reaper when the kill wakes it.  [4.6: mm/oom_kill.c
    oom_kill_process, mark_oom_victim, wake_oom_reaper]"""
    problems = []
    after = step.after.view.by_pid
    queue = step.after.view.oom.reap_queue if step.after.view.oom is not None else ()
    for event in new_events(step):
        result = event.result
        if result.outcome is not Outcome.KILLED or result.choice is None or result.kill is None:
            continue
        by_pid = {t.pid: t for t in event.tasks}
        chosen = by_pid.get(result.choice.pid)
        if chosen is None:
            continue
        victim, victim_points = chosen.pid, 0
        for child_pid in chosen.children:
            child = by_pid.get(child_pid)
            if child is None or child.mm == chosen.mm:
                continue
            points = badness(child, event.ctx.totalpages)
            if points > victim_points:
                victim, victim_points = child.pid, points
        got = result.kill.victim[0] if result.kill.victim is not None else None
        if got != victim:
            problems.append(f"pid {chosen.pid} was chosen and its children are "
                            f"{list(chosen.children)}, so pid {victim} must die, but the "
                            f"victim was {got}")
            continue
        state = after.get(victim)
        if state is not None and state.oom is not None and not (state.oom.sigkill
                                                                 and state.oom.memdie):
            problems.append(f"victim pid {victim} has sigkill {state.oom.sigkill} and memdie "
                            f"{state.oom.memdie} after the kill")
        if state is not None and result.kill.reap and victim not in queue:
            problems.append(f"victim pid {victim} is not queued for the reaper ({list(queue)})")
    return capped(problems)


@step_rule("OOM-R4", "oom_score_adj writes refuse bad values with 4.6's errno",
           ops=("set_oom_score_adj",), needs=NEEDS)
def adj_write(step: OomStep) -> list[str]:
    """-EINVAL outside -1000..1000, -EACCES below the process's oom_score_adj_min without
    CAP_SYS_RESOURCE (the minimum, not the current value), -ESRCH for no such process, and
    the state unchanged on each; otherwise 0, the value stored, and the minimum moved to it
    with CAP_SYS_RESOURCE.  [4.6: fs/proc/base.c oom_score_adj_write]"""
    pid, value = step.args["pid"], step.args["value"]
    proc = step.before.view.by_pid.get(pid)
    if proc is None or proc.oom is None:
        want = -Errno.ESRCH
    elif not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
        want = -Errno.EINVAL
    elif value < proc.oom.oom_score_adj_min and not proc.oom.cap_sys_resource:
        want = -Errno.EACCES
    else:
        want = 0
    if step.result != want:
        return [f"set_oom_score_adj(pid {pid}, {value}) returned {step.result!r}, want {want}"]
    after = step.after.view.by_pid.get(pid)
    if proc is None or proc.oom is None or after is None or after.oom is None:
        return []
    expect = proc.oom
    if want == 0:
        expect = attrs.evolve(expect, oom_score_adj=value, oom_score_adj_min=(
            value if proc.oom.cap_sys_resource else proc.oom.oom_score_adj_min))
    if after.oom != expect:
        return [f"set_oom_score_adj(pid {pid}, {value}) returning {step.result} left "
                f"{after.oom}, want {expect}"]
    return []


@step_rule("OOM-R5", "out_of_memory runs exactly where 4.6 calls it, as current",
           ops=ALLOCATING, needs=NEEDS)
def oom_callers(step: OomStep) -> list[str]:
    """A user-mode access (read, write) that ends in VM_FAULT_OOM made one
    pagefault_out_of_memory call, as its last OOM call; no other step makes one (a kernel
    copy's fault goes to the exception fixup); every allocator call is one
    __alloc_pages_may_oom makes (direct reclaim, __GFP_FS, a normal zone, order at most 3,
    no __GFP_NORETRY or __GFP_THISNODE, a current without TIF_MEMDIE, or __GFP_NOFAIL); and
    current is the process the operation runs as.  [4.6: arch/x86/mm/fault.c
    mm_fault_error; mm/page_alloc.c __alloc_pages_may_oom]"""
    events = new_events(step)
    problems = []
    oom_fault = (step.op in ("read", "write") and isinstance(step.result, FaultResult)
                 and bool(step.result.vm_fault & VM_FAULT_OOM))
    faults = [e for e in events if e.trigger == "pagefault"]
    if oom_fault and (len(faults) != 1 or events[-1].trigger != "pagefault"):
        problems.append(f"{step.op} ended in VM_FAULT_OOM at {step.result.addr:#x}, but the "
                        f"step's OOM calls were {[e.trigger for e in events]} (want one "
                        f"pagefault call, last)")
    if not oom_fault and faults:
        problems.append(f"{step.op} returned {step.result!r:.100} yet made "
                        f"{len(faults)} pagefault_out_of_memory call(s)")
    me = acting(step)
    want_current = me.pid if me is not None else None
    for event in events:
        current = event.ctx.current[0] if event.ctx.current is not None else None
        if current != want_current:
            problems.append(f"an OOM call of {step.op} ran with current {current}, but the "
                            f"operation runs as {want_current}")
        if event.trigger == "alloc":
            memdie = any(t.pid == current and t.threads[0].memdie for t in event.tasks)
            if not alloc_may_oom(event.gfp_mask, event.order, memdie):
                problems.append(f"a failed allocation (gfp {event.gfp_mask:#x}, order "
                                f"{event.order}) called the OOM killer, which 4.6 does not")
        elif event.trigger != "pagefault":
            problems.append(f"an OOM call has the unknown trigger {event.trigger!r}")
    return capped(problems)


@step_rule("OOM-R6", "a process with SIGKILL pending runs no more user code",
           ops=ACTING_PID + ACTING_CPU, needs=NEEDS)
def killed_stays_dead(step: OomStep) -> list[str]:
    """A process the OOM killer signalled never returns to user space: a user access it
    would make is answered with its SIGKILL (a FaultResult with signal SIGKILL and nothing
    done), a kernel copy copies nothing (and zero-fills), a system call returns -EINTR, and
    nothing changes: no process, page or OOM state moves."""
    me = acting(step)
    if me is None or me.oom is None or not me.oom.sigkill:
        return []
    result = step.result
    if step.op in ("read", "write"):
        ok = isinstance(result, FaultResult) and result.signal == SIGKILL and result.done == 0
    elif step.op == "copy_from_user":
        n = step.args["n"]
        ok = result == (n, bytes(n))
    elif step.op == "copy_to_user":
        ok = result == len(step.args["data"])
    else:
        ok = result == -Errno.EINTR
    problems = []
    if not ok:
        problems.append(f"pid {me.pid} has SIGKILL pending, yet {step.op} returned "
                        f"{result!r:.120}")
    before, after = step.before.view, step.after.view
    for name in ("processes", "pages", "oom"):
        if getattr(before, name) != getattr(after, name):
            problems.append(f"{step.op} by the dying pid {me.pid} changed the kernel's {name}")
    return problems


@step_rule("OOM-R7", "a reaped or exiting victim's memory returns and nobody else loses a page",
           ops=("oom_reap", "exit"), needs=NEEDS)
def memory_returns(step: OomStep) -> list[str]:
    """The reaper takes the head of its queue (0 when empty); for a victim still alive its
    VMAs stay, every page only its anonymous or private VMAs held goes back to the page
    allocator (exactly those), its oom_score_adj becomes -1000 and TIF_MEMDIE is cleared.
    When a victim (SIGKILL pending) exits, every page only it held and all its table pages
    go back.  In both cases every other process keeps its RSS and its PTEs.  [4.6:
    mm/oom_kill.c oom_reaper, __oom_reap_task; kernel/exit.c exit_mm; mm/mmap.c exit_mmap]"""
    before, after = step.before, step.after
    if step.op == "oom_reap":
        queue = before.view.oom.reap_queue if before.view.oom is not None else ()
        want = queue[0] if queue else 0
        if step.result != want:
            return [f"oom_reap returned {step.result!r}, but the reaper's queue was "
                    f"{list(queue)}"]
        pid = want
    else:
        pid = step.args["pid"]
        proc = before.view.by_pid.get(pid)
        if step.result != 0 or proc is None or proc.oom is None or not proc.oom.sigkill:
            return []
    victim = before.view.by_pid.get(pid)
    if victim is None:
        return []
    problems = _others_intact(before, after, pid)
    ptes = before.ptes.get(victim.mm, {})
    if step.op == "oom_reap":
        held = dict(reapable_ptes(ptes, before.spaces.get(pid)))
        extra = 0
        problems.extend(_reaped_state(before, after, pid))
    else:
        held = {addr: entry for addr, entry in ptes.items() if present(entry)}
        extra = sum(1 for table in before.tables.tables if table.mm == victim.mm)
    freed = _freed(before, after)
    want_freed = _exclusive(before, held.values()) + extra
    if freed != want_freed:
        problems.append(f"{step.op} of pid {pid} returned {freed} page(s) to the allocator, "
                        f"but {want_freed} were its alone"
                        + (f" (with {extra} table pages)" if extra else ""))
    return capped(problems)


def _freed(before: FaultSnapshot, after: FaultSnapshot) -> int:
    def free(snap: FaultSnapshot) -> int:
        return sum(end - start for start, end in snap.pages.free_spans)
    return free(after) - free(before)


def _exclusive(snap: FaultSnapshot, entries: Any) -> int:
    """User pages whose every reference is one of these PTEs."""
    count: dict[int, int] = {}
    for entry in entries:
        pfn = pt.pte_pfn(entry)
        count[pfn] = count.get(pfn, 0) + 1
    return sum(1 for pfn, n in count.items()
               if (page := snap.view.by_pfn.get(pfn)) is not None and page.refcount == n
               and not page.cached)


def _others_intact(before: FaultSnapshot, after: FaultSnapshot, pid: int) -> list[str]:
    problems = []
    for proc in before.view.processes:
        if proc.pid == pid:
            continue
        now = after.view.by_pid.get(proc.pid)
        if now is None or now.rss != proc.rss:
            problems.append(f"pid {proc.pid} lost pages: rss {list(proc.rss)} -> "
                            f"{list(now.rss) if now is not None else 'gone'}")
        elif before.ptes.get(proc.mm, {}) != after.ptes.get(proc.mm, {}):
            problems.append(f"pid {proc.pid}'s PTEs changed")
    return problems


def _reaped_state(before: FaultSnapshot, after: FaultSnapshot, pid: int) -> list[str]:
    problems = []
    now = after.view.by_pid.get(pid)
    if now is None or now.oom is None:
        return [f"the reaped pid {pid} is gone"]
    if now.oom.oom_score_adj != OOM_SCORE_ADJ_MIN or now.oom.memdie or not now.oom.reaped:
        problems.append(f"after reaping, pid {pid} has oom_score_adj {now.oom.oom_score_adj}, "
                        f"memdie {now.oom.memdie}, reaped {now.oom.reaped} (want -1000, "
                        f"False, True)")
    old, new = before.spaces.get(pid), after.spaces.get(pid)
    if old is not None and new is not None and old.vmas != new.vmas:
        problems.append(f"reaping pid {pid} changed its VMAs")
    return problems


def commit_config(snap: FaultSnapshot) -> ProcessConfig:
    """The ProcessConfig of ``specs/vma.py`` for the machine the snapshot shows: the commit
    limit's inputs (totalram_pages, swap, the admin and user reserves) follow from its
    size alone."""
    pages = snap.pages
    return process_config(MachineConfig(name="commit", nr_pages=pages.nr_pages,
                                        nr_cpus=pages.nr_cpus))


def overlap_pages(space: MmView, start: int, end: int) -> int:
    """Pages of [start, end) a VMA of ``space`` covers."""
    return sum((min(end, v.end) - max(start, v.start)) >> PAGE_SHIFT for v in space.vmas
               if v.start < end and start < v.end)


def total_vm_at_test(step: OomStep, space: MmView) -> int:
    """The acting mm's total_vm when 4.6 tests the charge: as before the step, less what a
    MAP_FIXED mmap or an MREMAP_FIXED mremap unmapped at its target first [4.6: mm/mmap.c
    mmap_region; mm/mremap.c mremap_to].  A stack that grows twice in one access is
    tested the second time with a larger total_vm, hence a smaller limit: the bound here is
    the first test's, which the count must respect all the more."""
    args = step.args
    if step.op == "mmap" and args.get("flags", 0) & MAP_FIXED:
        start = args.get("addr", 0)
        return space.total_vm - overlap_pages(space, start,
                                              start + page_align(args.get("length", 0)))
    if step.op == "mremap" and args.get("flags", 0) & MREMAP_FIXED:
        start = args.get("new_addr", 0)
        return space.total_vm - overlap_pages(space, start,
                                              start + page_align(args.get("new_len", 0)))
    return space.total_vm


def commit_allowed(pconf: ProcessConfig, space: MmView, total_vm: int) -> int:
    """__vm_enough_memory's bound under OVERCOMMIT_NEVER for a process without
    CAP_SYS_ADMIN: vm_commit_limit (the kbytes if set, else totalram times the ratio, plus
    swap), less the admin reserve, less the user reserve min(total_vm / 32,
    user_reserve_kbytes in pages).  [4.6: mm/util.c __vm_enough_memory, vm_commit_limit]"""
    if space.overcommit_kbytes:
        limit = space.overcommit_kbytes >> (PAGE_SHIFT - 10)
    else:
        limit = pconf.totalram_pages * space.overcommit_ratio // 100
    limit += pconf.total_swap_pages
    limit -= pconf.admin_reserve_kbytes >> (PAGE_SHIFT - 10)
    return limit - min(total_vm // 32, pconf.user_reserve_kbytes >> (PAGE_SHIFT - 10))


@step_rule("OOM-R8", "under OVERCOMMIT_NEVER a charge leaves vm_committed_as below the limit",
           ops=COMMITTING, needs=NEEDS_COMMIT)
def never_overcommits(step: OomStep) -> list[str]:
    """A step that raised the machine-wide count, made as a process whose address space runs
    under OVERCOMMIT_NEVER, leaves the count below what __vm_enough_memory allowed that
    process: each charge is granted only while the count including it is below the bound,
    and nothing after the last test of a step raises it.  A spawned process is tested with
    its new mm (total_vm 0, then 1: no user reserve).  Every charge goes through the whole
    machine's count: a kernel whose processes each keep their own fails here."""
    before, after = step.before.view.committed, step.after.view.committed
    if before is None or after is None or after <= before:
        return []
    actor = acting(step)
    if step.op == "spawn":
        born = [pid for pid in step.after.spaces if pid not in step.before.spaces]
        space = step.after.spaces.get(born[0]) if born else None
        total_vm = 0
    else:
        space = step.before.spaces.get(actor.pid) if actor is not None else None
        total_vm = total_vm_at_test(step, space) if space is not None else 0
    if space is None or space.overcommit_memory != OVERCOMMIT_NEVER:
        return []
    allowed = commit_allowed(commit_config(step.before), space, total_vm)
    if after >= allowed:
        return [f"committed went from {before} to {after} pages, but under OVERCOMMIT_NEVER "
                f"(ratio {space.overcommit_ratio}, kbytes {space.overcommit_kbytes}) the "
                f"acting process (total_vm {total_vm}) may commit below {allowed} only"]
    return []
