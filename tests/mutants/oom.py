"""Deliberately broken OOM killers, at least one per OOM check ID.

Two layers.  The *policies* are :class:`refmodel.oom.Oom46` with one method replaced by a
broken copy (the changed line carries ``# MUTATION:``); ``tests/refmodel/test_oom_mutants.py``
shows the hand-computed tables reject each one, and ``policy_target`` names the check that
catches it in a running kernel.  The *kernels* at the bottom are what the mutant runner
drives: :class:`refmodel.kernel.RefKernel` with a broken policy, a broken OOM glue
(``refmodel/oom_kernel.py``) or a broken kernel method, each with ``target`` and
``subsystem = "oom"``.  ``SparesMmSharers`` has no kernel: the composed model has one task
per mm, so no other process ever shares a victim's mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import attrs

from refmodel.kernel import RefKernel
from refmodel.oom import Oom46, task_by_pid
from refmodel.oom_kernel import REAPER_CPU, OomKiller
from specs import pte as pt
from specs.kernel import KernelView
from specs.oom import (
    OOM_SCORE_ADJ_MIN,
    UINT_MASK,
    Choice,
    Kill,
    OomResult,
    Scan,
    Task,
    Thread,
)
from specs.vma import VM_LOCKED, VM_SHARED, AddressSpace

if TYPE_CHECKING:
    from refmodel.fault import Page
    from refmodel.kernel import Process


class _Badness(Oom46):
    """Shared shape of the formula mutants: 4.6's oom_badness with hooks."""

    def base_points(self, task: Task) -> int:
        return task.rss + task.swapents + task.nr_ptes + task.nr_pmds


class DivisionAfterMultiply(_Badness):
    """oom_score_adj is scaled as adj * totalpages / 1000 instead of adj * (totalpages / 1000)."""

    policy_target = "OOM-R1"

    def oom_badness(self, task: Task, totalpages: int) -> int:
        if self.oom_unkillable_task(task) or self.find_task_mm(task) is None:
            return 0
        if task.oom_score_adj == OOM_SCORE_ADJ_MIN:
            return 0
        points = self.base_points(task)
        if task.cap_sys_admin:
            points -= points * 3 // 100
        adj = task.oom_score_adj * totalpages
        points += abs(adj) // 1000 * (1 if adj >= 0 else -1)  # MUTATION: multiplied first
        return points if points > 0 else 1


class AdminDiscountAfterAdj(_Badness):
    """The 3% CAP_SYS_ADMIN discount is taken after oom_score_adj is added, not before."""

    policy_target = "OOM-R1"

    def oom_badness(self, task: Task, totalpages: int) -> int:
        if self.oom_unkillable_task(task) or self.find_task_mm(task) is None:
            return 0
        if task.oom_score_adj == OOM_SCORE_ADJ_MIN:
            return 0
        points = self.base_points(task)
        points += task.oom_score_adj * (totalpages // 1000)
        if task.cap_sys_admin:
            points -= points * 3 // 100  # MUTATION: discount on the adjusted points
        return points if points > 0 else 1


class MinusThousandKillable(_Badness):
    """oom_score_adj -1000 is treated as an ordinary (very low) adjustment, not as "never"."""

    policy_target = "OOM-R2"

    def oom_badness(self, task: Task, totalpages: int) -> int:
        if self.oom_unkillable_task(task) or self.find_task_mm(task) is None:
            return 0
        # MUTATION: no early return for OOM_SCORE_ADJ_MIN
        points = self.base_points(task)
        if task.cap_sys_admin:
            points -= points * 3 // 100
        points += task.oom_score_adj * (totalpages // 1000)
        return points if points > 0 else 1


class NoFloorOfOne(_Badness):
    """An eligible task whose points drop to 0 or below scores 0 and is never a candidate."""

    policy_target = "OOM-R2"

    def oom_badness(self, task: Task, totalpages: int) -> int:
        if self.oom_unkillable_task(task) or self.find_task_mm(task) is None:
            return 0
        if task.oom_score_adj == OOM_SCORE_ADJ_MIN:
            return 0
        points = self.base_points(task)
        if task.cap_sys_admin:
            points -= points * 3 // 100
        points += task.oom_score_adj * (totalpages // 1000)
        return max(points, 0)  # MUTATION: no minimum of 1


class ParentOverChild(Oom46):
    """A child is sacrificed only if it scores above its parent, so a big parent dies
    although an eligible child exists."""

    policy_target = "OOM-R3"

    def sacrifice_child(self, tasks: Sequence[Task], parent: Task, totalpages: int) -> Task:
        # MUTATION: the running maximum starts at the parent's own points, not at 0
        victim, victim_points = parent, self.oom_badness(parent, totalpages) & UINT_MASK
        for child_pid in parent.children:
            child = task_by_pid(tasks, child_pid)
            if child is None or self.process_shares_mm(child, parent.mm):
                continue
            child_points = self.oom_badness(child, totalpages) & UINT_MASK
            if child_points > victim_points:
                victim, victim_points = child, child_points
        return victim


class KillsWhileVictimDying(Oom46):
    """A thread with TIF_MEMDIE does not stop the scan, so a second victim is chosen while
    the first is still exiting."""

    policy_target = "OOM-R2"

    def oom_scan_process_thread(self, task: Task, thread: Thread, sysrq: bool) -> Scan:
        del sysrq
        return super().oom_scan_process_thread(task, thread, True)  # MUTATION: always sysrq


class SparesMmSharers(Oom46):
    """Only the victim gets SIGKILL; other processes using its mm keep running, and the
    reaper is still woken."""

    policy_target = ""  # no kernel mutant: one task per mm, nobody shares a victim's mm

    def oom_kill_process(self, tasks: Sequence[Task], pid: int, tid: int,
                         totalpages: int) -> Kill:
        kill = super().oom_kill_process(tasks, pid, tid, totalpages)
        if kill.victim is None or kill.already_exiting:
            return kill
        return Kill(kill.victim, kill.sigkill[:1], reap=True)  # MUTATION: sharers spared


class TieGoesToLast(Oom46):
    """Among processes of equal badness the last listed is chosen, not the first."""

    policy_target = "OOM-R2"

    def select_bad_process(self, tasks: Sequence[Task], totalpages: int,
                           sysrq: bool = False) -> Choice | Scan | None:
        found = super().select_bad_process(tasks, totalpages, sysrq)
        if not isinstance(found, Choice):
            return found
        for task in reversed(tasks):  # MUTATION: the last of the equal candidates wins
            thread = self.find_task_mm(task)
            if (thread is not None and self.oom_badness(task, totalpages) == found.points
                    and not task.oom_origin):
                return Choice(task.pid, thread.tid, found.points, found.score)
        return found


class AdjWriteNoRangeCheck(Oom46):
    """oom_score_adj_write stores values outside -1000..1000 instead of refusing them."""

    policy_target = "OOM-R4"

    def oom_score_adj_write(self, task: Task, value: int,
                            cap_sys_resource: bool) -> tuple[int, Task]:
        clamped = max(min(value, 1000), -1000)
        result, after = super().oom_score_adj_write(task, clamped, cap_sys_resource)
        return result, after  # MUTATION: out-of-range values are clamped and accepted


MUTANTS: tuple[type[Oom46], ...] = (
    DivisionAfterMultiply,
    AdminDiscountAfterAdj,
    MinusThousandKillable,
    NoFloorOfOne,
    ParentOverChild,
    KillsWhileVictimDying,
    SparesMmSharers,
    TieGoesToLast,
    AdjWriteNoRangeCheck,
)


# -- broken glue -------------------------------------------------------------------------------


class PagefaultWithoutOom(OomKiller):
    """pagefault_out_of_memory does nothing."""

    def pagefault(self) -> None:
        return None  # MUTATION: VM_FAULT_OOM never reaches out_of_memory


class ReaperKeepsPages(OomKiller):
    """The reaper clears the PTEs but never drops the pages' references."""

    def reap(self) -> int:
        saved = self.k.put_page
        self.k.put_page = lambda page, cpu=0: None  # type: ignore[method-assign]  # MUTATION
        try:
            return super().reap()
        finally:
            self.k.put_page = saved  # type: ignore[method-assign]


class ReaperStopsAtSharedVma(OomKiller):
    """The reaper stops at the first VMA it may not reap instead of skipping it."""

    def reap(self) -> int:
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
                break  # MUTATION: the VMAs after it are never reaped
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


class MarksChosenParentToo(OomKiller):
    """When a child is sacrificed, the chosen parent is marked TIF_MEMDIE as well."""

    def apply(self, result: OomResult) -> None:
        super().apply(result)
        if result.choice is not None and result.choice.pid in self.k.procs:
            self.k.procs[result.choice.pid].oom.memdie = True  # MUTATION: two victims


# -- the mutant kernels --------------------------------------------------------------------------


class OomMutantKernel(RefKernel):
    """RefKernel with one broken OOM part; subclasses name it."""

    subsystem: ClassVar[str] = "oom"
    target: ClassVar[str] = ""


class ScoreDividesLast(OomMutantKernel):
    """oom_badness scales oom_score_adj as adj * totalpages / 1000 (multiplying first)."""

    target = "OOM-R1"
    oom_policy = DivisionAfterMultiply()


class AdminDiscountsAdjustedPoints(OomMutantKernel):
    """oom_badness takes the 3% CAP_SYS_ADMIN discount after adding oom_score_adj."""

    target = "OOM-R1"
    oom_policy = AdminDiscountAfterAdj()


class KillsMinusThousand(OomMutantKernel):
    """A process with oom_score_adj -1000 is an ordinary candidate for the OOM killer."""

    target = "OOM-R2"
    oom_policy = MinusThousandKillable()


class NoBadnessFloor(OomMutantKernel):
    """An eligible process whose points fall to 0 or below is skipped instead of scoring 1."""

    target = "OOM-R2"
    oom_policy = NoFloorOfOne()


class TieKillsLastListed(OomMutantKernel):
    """Among processes of equal badness the OOM killer chooses the last listed."""

    target = "OOM-R2"
    oom_policy = TieGoesToLast()


class KillsWhileOneDies(OomMutantKernel):
    """select_bad_process ignores TIF_MEMDIE and kills again while a victim is dying."""

    target = "OOM-R2"
    oom_policy = KillsWhileVictimDying()


class TwoVictimsInFlight(OomMutantKernel):
    """A kill that sacrifices a child marks the chosen parent TIF_MEMDIE too."""

    target = "OOM-I1"
    oom_killer = MarksChosenParentToo


class ParentDiesBeforeChild(OomMutantKernel):
    """A child is sacrificed only if it scores above its parent."""

    target = "OOM-R3"
    oom_policy = ParentOverChild()


class AdjOutOfRangeAccepted(OomMutantKernel):
    """oom_score_adj writes outside -1000..1000 are clamped and accepted, not refused."""

    target = "OOM-R4"
    oom_policy = AdjWriteNoRangeCheck()


class FaultOomNotHandled(OomMutantKernel):
    """A user fault ending in VM_FAULT_OOM never calls pagefault_out_of_memory."""

    target = "OOM-R5"
    oom_killer = PagefaultWithoutOom


class DyingProcessKeepsRunning(OomMutantKernel):
    """A process with SIGKILL pending still makes its accesses and system calls."""

    target = "OOM-R6"

    def _dying(self, proc: Process) -> bool:
        super()._dying(proc)
        return False  # MUTATION: SIGKILL pending is ignored


class ReapedMemoryLeaks(OomMutantKernel):
    """The OOM reaper unmaps the victim's pages without freeing them."""

    target = "OOM-R7"
    oom_killer = ReaperKeepsPages
    #: the reap has to follow a kill and an exit-free stretch; since the machine also
    #: drives overcommit pressure, 60 examples caught it under 36 of 40 seeds, 80 under 39
    examples = 80


class ReaperStopsEarly(OomMutantKernel):
    """The OOM reaper stops at the victim's first shared mapping, leaving the rest mapped."""

    target = "OOM-I2"
    oom_killer = ReaperStopsAtSharedVma


class CommitPerProcess(OomMutantKernel):
    """Every address space keeps its own vm_committed_as, so under OVERCOMMIT_NEVER each
    process is held to the limit alone and together they commit past it."""

    target = "OOM-R8"

    def _space(self) -> AddressSpace:
        space = self._new_space(self.config)  # MUTATION: no machine-wide counter
        if self.commit is not None:
            space.mm.commit.sysctl.update(self.commit.sysctl)  # type: ignore[attr-defined]
        return space  # type: ignore[return-value]

    def set_sysctl(self, name: str, value: int) -> int:
        result = super().set_sysctl(name, value)
        if result == 0:
            for proc in self.procs.values():
                proc.space.set_sysctl(name, value)
        return result

    def view(self) -> KernelView:
        """The machine's count as the sum of the processes' own."""
        return attrs.evolve(super().view(), committed=sum(
            proc.space.view().committed for proc in self.procs.values()))


class ExitKeepsCharges(OomMutantKernel):
    """exit_mmap never gives the exiting process's charges back to vm_committed_as."""

    target = "OOM-I3"

    def _release(self, space: AddressSpace) -> None:
        return None  # MUTATION: vm_unacct_memory is skipped at exit
