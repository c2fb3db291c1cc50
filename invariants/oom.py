"""State invariants of the OOM killer in the composed kernel, OOM-I1 .. OOM-I3
(``specs/oom.md``), and the badness formula the OOM rules recompute.

The checks read the composed kernel's snapshot (``invariants.fault.FaultSnapshot``): the
processes with their OOM state, the page tables and the address spaces.  The formula here is
written again from the spec, not imported from the reference model, so a kernel is judged
by what 4.6 computes, whatever its own code does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from invariants.fault import FaultSnapshot, capped, present
from invariants.registry import state_invariant
from specs import gfp
from specs.kernel import Capability, ProcessView, RssMember
from specs.machine import PAGE_ALLOC_COSTLY_ORDER
from specs.oom import OOM_SCORE_ADJ_MIN, Task, Thread
from specs.pagetable import MmView
from specs.vma import VM_ACCOUNT, VM_LOCKED, VM_SHARED, VmaView
from specs.vma import MmView as SpaceView

NEEDS = (Capability.OOM,)
#: the machine-wide vm_committed_as and sysctls (OOM-I3, OOM-R8), in a kernel with the OOM
#: killer (every OOM ID needs it)
NEEDS_COMMIT = (Capability.OOM, Capability.OVERCOMMIT)


def badness(task: Task, totalpages: int) -> int:
    """4.6's oom_badness: 0 for init, kernel threads, a task with no mm and adj -1000; else
    RSS + swap entries + PTE and PMD pages, less 3% with CAP_SYS_ADMIN, plus adj times
    (totalpages / 1000) divided first, and at least 1.  [4.6: mm/oom_kill.c oom_badness]"""
    if task.pid == 1 or task.kthread or task.mm is None:
        return 0
    if not any(thread.has_mm for thread in task.threads):
        return 0
    if task.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return 0
    points = task.rss + task.swapents + task.nr_ptes + task.nr_pmds
    if task.cap_sys_admin:
        points -= points * 3 // 100
    points += task.oom_score_adj * (totalpages // 1000)
    return max(points, 1)


def task_of(proc: ProcessView, mm: MmView | None, processes: Sequence[ProcessView]) -> Task:
    """The descriptor 4.6's OOM code would read for a process, built from the views alone:
    the counters from the kernel view, the table pages from the page-table view, the
    children as the processes naming it as parent (fork order)."""
    state = proc.oom
    return Task(
        pid=proc.pid, threads=(Thread(tid=proc.pid, memdie=bool(state and state.memdie)),),
        mm=proc.mm, rss=proc.get_mm_rss, swapents=proc.rss[RssMember.MM_SWAPENTS],
        nr_ptes=mm.nr_ptes if mm is not None else 0, nr_pmds=mm.nr_pmds if mm is not None else 0,
        oom_score_adj=state.oom_score_adj if state else 0,
        oom_score_adj_min=state.oom_score_adj_min if state else 0,
        cap_sys_admin=bool(state and state.cap_sys_admin), sigkill=bool(state and state.sigkill),
        children=tuple(sorted(p.pid for p in processes if p.ppid == proc.pid)))


def alloc_may_oom(gfp_mask: int, order: int, current_memdie: bool) -> bool:
    """Whether __alloc_pages_slowpath reaches out_of_memory for a failed allocation [4.6:
    mm/page_alloc.c __alloc_pages_slowpath, __alloc_pages_may_oom]."""
    nofail = bool(gfp_mask & gfp.__GFP_NOFAIL)
    if not gfp_mask & gfp.__GFP_DIRECT_RECLAIM or (current_memdie and not nofail):
        return False
    if nofail:
        return True
    return not (gfp_mask & gfp.__GFP_NORETRY or order > PAGE_ALLOC_COSTLY_ORDER
                or gfp.gfp_zone(gfp_mask) < gfp.ZoneType.ZONE_NORMAL
                or not gfp_mask & gfp.__GFP_FS or gfp_mask & gfp.__GFP_THISNODE)


def reapable(vma: VmaView) -> bool:
    """A VMA the OOM reaper unmaps: not VM_LOCKED, and anonymous or private [4.6:
    mm/oom_kill.c __oom_reap_task] (no hugetlb in the model)."""
    return not vma.flags & VM_LOCKED and (vma.file is None or not vma.flags & VM_SHARED)


def reapable_ptes(ptes: dict[int, int], space: SpaceView | None) -> Iterator[tuple[int, int]]:
    """(address, PTE) of every present PTE under a reapable VMA."""
    for vma in space.vmas if space is not None else ():
        if reapable(vma):
            for addr in range(vma.start, vma.end, 4096):
                entry = ptes.get(addr, 0)
                if present(entry):
                    yield addr, entry


@state_invariant("OOM-I1", "at most one OOM victim holds TIF_MEMDIE", needs=NEEDS)
def one_victim_in_flight(snap: FaultSnapshot) -> list[str]:
    """select_bad_process aborts while any task holds TIF_MEMDIE, so with one task per mm
    a second victim is never marked before the first has exited or been reaped."""
    dying = [p.pid for p in snap.view.processes if p.oom is not None and p.oom.memdie]
    if len(dying) > 1:
        return [f"processes {dying} all hold TIF_MEMDIE: a new victim was chosen while "
                f"another was still in flight"]
    return []


@state_invariant("OOM-I2", "a reaped process maps nothing the reaper unmaps", needs=NEEDS)
def reaped_is_empty(snap: FaultSnapshot) -> list[str]:
    """A process the reaper took keeps its VMAs but no present PTE under any VMA that is
    not VM_LOCKED and is anonymous or private; it never runs again, so nothing maps them
    back."""
    problems = []
    for proc in snap.view.processes:
        if proc.oom is None or not proc.oom.reaped:
            continue
        left = list(reapable_ptes(snap.ptes.get(proc.mm, {}), snap.spaces.get(proc.pid)))
        if left:
            where = ", ".join(f"{addr:#x}" for addr, _entry in left[:4])
            problems.append(f"pid {proc.pid} was reaped but still maps {len(left)} page(s) "
                            f"of its anonymous or private VMAs (at {where})")
    return capped(problems)


def sysctls(space: SpaceView) -> tuple[int, int, int, int]:
    """The vm sysctls a space runs under."""
    return (space.max_map_count, space.overcommit_memory, space.overcommit_ratio,
            space.overcommit_kbytes)


@state_invariant("OOM-I3", "vm_committed_as is what the live mms have charged",
                 needs=NEEDS_COMMIT)
def committed_is_charged(snap: FaultSnapshot) -> list[str]:
    """The machine's count is the pages of every live process's VM_ACCOUNT VMAs plus the
    charge of every shmem object mapped anywhere, counted once per object (one kernel inode:
    a child's copy after fork is the parent's object); every address space reports that
    count and the same sysctls.  A process that exited gave everything back.  [4.6:
    mm/util.c vm_committed_as; mm/mmap.c exit_mmap vm_unacct_memory; mm/shmem.c
    shmem_acct_size, shmem_evict_inode]"""
    committed = snap.view.committed
    if committed is None:
        return ["the kernel declares OVERCOMMIT but its view has no committed count"]
    problems = []
    accounted = 0
    shmem: dict[tuple[str, int], int] = {}
    first: tuple[int, tuple[int, int, int, int]] | None = None
    for proc in snap.view.processes:
        space = snap.spaces.get(proc.pid)
        if space is None:
            continue
        accounted += sum(vma.pages for vma in space.vmas if vma.flags & VM_ACCOUNT)
        inode_of = dict(proc.files)
        for file in space.files:
            if file.shmem:
                inode = inode_of.get(file.ident)
                key = ("inode", inode) if inode is not None else (f"pid {proc.pid}", file.ident)
                shmem[key] = max(shmem.get(key, 0), file.charged)
        if space.committed != committed:
            problems.append(f"pid {proc.pid}'s address space reports committed "
                            f"{space.committed}, the machine {committed}")
        if first is None:
            first = (proc.pid, sysctls(space))
        elif sysctls(space) != first[1]:
            problems.append(f"pid {proc.pid} runs under the sysctls (max_map_count, "
                            f"overcommit_memory, ratio, kbytes) {sysctls(space)}, pid "
                            f"{first[0]} under {first[1]}")
    want = accounted + sum(shmem.values())
    if committed != want:
        problems.insert(0, f"committed is {committed} pages, but the live processes' "
                           f"VM_ACCOUNT VMAs hold {accounted} and their shmem objects "
                           f"{want - accounted}")
    return capped(problems)
