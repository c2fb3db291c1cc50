"""Deliberately broken OOM killers: 4.6's functions with one bug each.

Each class is :class:`refmodel.oom.Oom46` with one method replaced by a broken copy; the
changed line carries ``# MUTATION:``.  There is no OOM state machine or checker yet (they need
the composed kernel model of issue 5), so these classes have no ``target`` and the mutant
runner skips them; ``tests/refmodel/test_oom_mutants.py`` shows the hand-computed tables
reject each one.  ``planned_target`` names the spec ID (``specs/oom.md``, "Invariants
(planned)") whose checker must catch it once it exists; at that point each class gains
``target`` and ``subsystem = "oom"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from refmodel.oom import Oom46, task_by_pid
from specs.oom import OOM_SCORE_ADJ_MIN, UINT_MASK, Choice, Kill, Scan, Task, Thread


class _Badness(Oom46):
    """Shared shape of the formula mutants: 4.6's oom_badness with hooks."""

    def base_points(self, task: Task) -> int:
        return task.rss + task.swapents + task.nr_ptes + task.nr_pmds


class DivisionAfterMultiply(_Badness):
    """oom_score_adj is scaled as adj * totalpages / 1000 instead of adj * (totalpages / 1000)."""

    planned_target = "OOM-R1"

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

    planned_target = "OOM-R1"

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

    planned_target = "OOM-I1"

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

    planned_target = "OOM-I2"

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

    planned_target = "OOM-R2"

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

    planned_target = "OOM-I3"

    def oom_scan_process_thread(self, task: Task, thread: Thread, sysrq: bool) -> Scan:
        del sysrq
        return super().oom_scan_process_thread(task, thread, True)  # MUTATION: always sysrq


class SparesMmSharers(Oom46):
    """Only the victim gets SIGKILL; other processes using its mm keep running, and the
    reaper is still woken."""

    planned_target = "OOM-R3"

    def oom_kill_process(self, tasks: Sequence[Task], pid: int, tid: int,
                         totalpages: int) -> Kill:
        kill = super().oom_kill_process(tasks, pid, tid, totalpages)
        if kill.victim is None or kill.already_exiting:
            return kill
        return Kill(kill.victim, kill.sigkill[:1], reap=True)  # MUTATION: sharers spared


class TieGoesToLast(Oom46):
    """Among processes of equal badness the last listed is chosen, not the first."""

    planned_target = "OOM-I2"

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

    planned_target = "OOM-R4"

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
