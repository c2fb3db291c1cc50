"""The OOM killer inside the composed reference kernel, on hand-built scenarios.

The tiny preset has 4096 managed pages and no swap, so totalpages is 4096, one unit of
oom_score_adj is worth 4096 / 1000 = 4 pages, and /proc/<pid>/oom_score is
``badness * 1000 // 4096``.  Pid 1 is global init and never a victim.
"""

from __future__ import annotations

import pytest

from refmodel.kernel import RefKernel
from specs.errno import Errno
from specs.kernel import SIGKILL, VM_FAULT_OOM, Capability, FaultResult
from specs.machine import preset
from specs.oom import PANIC_NO_KILLABLE, Outcome
from specs.vma import (
    MAP_ANONYMOUS,
    MAP_POPULATE,
    MAP_PRIVATE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def boot() -> tuple[RefKernel, int]:
    """A kernel with init (pid 1) and one user process (pid 2) running on CPU 0."""
    k = RefKernel(preset("tiny"))
    assert 1 == k.spawn()
    assert 2 == k.spawn()
    assert 0 == k.switch(0, 2)
    return k, 2


def populate(k: RefKernel, pid: int, pages: int, prot: int = RW) -> int:
    addr = k.mmap(pid, 0, pages * PAGE, prot, ANON | MAP_POPULATE)
    assert addr > 0
    return addr


def free_pages(k: RefKernel) -> int:
    return sum(end - start for start, end in k.pages.view().free_spans)


def oom_of(k: RefKernel, pid: int) -> tuple[int, int, bool, bool, bool]:
    state = k.view().by_pid[pid].oom
    assert state is not None
    return (state.oom_score_adj, state.oom_score_adj_min, state.sigkill, state.memdie,
            state.reaped)


def test_map_populate_faults_in_every_page() -> None:
    """Private writable: write faults (anon pages); read-only: the zero page; PROT_NONE:
    nothing [4.6: mm/gup.c populate_vma_page_range]."""
    k, pid = boot()
    populate(k, pid, 10)
    assert 10 == k.view().by_pid[pid].rss[1]
    populate(k, pid, 5, PROT_READ)
    populate(k, pid, 5, PROT_NONE)
    assert 10 == k.view().by_pid[pid].rss[1]
    mm = k.tables.view().by_mm[k.view().by_pid[pid].mm]
    assert (1, 1) == (mm.nr_ptes, mm.nr_pmds)


def test_oom_score_by_hand() -> None:
    """10 anon pages + 1 PTE page + 1 PMD page = 12 points: score 12000 // 4096 = 2; with
    adj 250 (+1000 points) 1012 -> 247; as admin the 3% discount is 0 below 34 points."""
    k, pid = boot()
    populate(k, pid, 10)
    assert 2 == k.oom_score(pid)
    assert 0 == k.set_oom_score_adj(pid, 250)
    assert 247 == k.oom_score(pid)
    assert 0 == k.set_credentials(pid, cap_sys_admin=True, cap_sys_resource=False)
    assert 247 == k.oom_score(pid)
    assert 0 == k.oom_score(1)  # init
    assert -Errno.ESRCH == k.oom_score(99)


def test_admin_discount_before_adj() -> None:
    """1000 anon pages + 1 + 1 = 1002 points; admin: 1002 - 30 = 972; adj 250: 1972 ->
    1972000 // 4096 = 481 (the discount taken after the adj would give 1943 -> 474)."""
    k, pid = boot()
    populate(k, pid, 1000)
    mm = k.tables.view().by_mm[k.view().by_pid[pid].mm]
    assert (2, 1) == (mm.nr_ptes, mm.nr_pmds)  # 1000 pages span two PTE tables
    points = 1000 + 2 + 1
    assert points * 1000 // 4096 == k.oom_score(pid)
    k.set_credentials(pid, cap_sys_admin=True, cap_sys_resource=False)
    k.set_oom_score_adj(pid, 250)
    assert (points - points * 3 // 100 + 1000) * 1000 // 4096 == k.oom_score(pid)


def test_adj_writes() -> None:
    """Out of range: -EINVAL; below the minimum without CAP_SYS_RESOURCE: -EACCES (the
    minimum, not the current value); with it the minimum follows [4.6: fs/proc/base.c
    oom_score_adj_write]."""
    k, pid = boot()
    assert -Errno.EINVAL == k.set_oom_score_adj(pid, 1001)
    assert -Errno.EINVAL == k.set_oom_score_adj(pid, -1001)
    assert -Errno.EACCES == k.set_oom_score_adj(pid, -1)
    assert 0 == k.set_oom_score_adj(pid, 500)
    assert 0 == k.set_oom_score_adj(pid, 100)  # above the minimum 0: allowed
    assert (100, 0) == oom_of(k, pid)[:2]
    k.set_credentials(pid, cap_sys_admin=False, cap_sys_resource=True)
    assert 0 == k.set_oom_score_adj(pid, -500)
    assert (-500, -500) == oom_of(k, pid)[:2]
    k.set_credentials(pid, cap_sys_admin=False, cap_sys_resource=False)
    assert -Errno.EACCES == k.set_oom_score_adj(pid, -600)
    assert 0 == k.set_oom_score_adj(pid, -400)
    assert -Errno.ESRCH == k.set_oom_score_adj(99, 0)


def test_fork_inherits_adj_and_credentials() -> None:
    k, pid = boot()
    k.set_credentials(pid, cap_sys_admin=True, cap_sys_resource=True)
    k.set_oom_score_adj(pid, -300)
    child = k.fork(pid)
    state = k.view().by_pid[child].oom
    assert state is not None
    assert (-300, -300, True, True) == (state.oom_score_adj, state.oom_score_adj_min,
                                        state.cap_sys_admin, state.cap_sys_resource)


def test_exhaustion_kills_reaps_and_frees() -> None:
    """Populating more than memory holds: the allocation that fails calls the OOM killer
    (trigger "alloc"), the biggest process (the allocating one here) gets SIGKILL and
    TIF_MEMDIE, populate stops; nothing is freed until the reaper runs, which frees
    exactly its anon pages and pins its adj at -1000."""
    k, pid = boot()
    populate(k, pid, 2560)
    populate(k, pid, 2560)
    view = k.view()
    assert view.oom is not None
    (event,) = view.oom.events
    assert ("alloc", Outcome.KILLED) == (event.trigger, event.result.outcome)
    assert event.result.choice is not None
    assert pid == event.result.choice.pid
    assert (pid, pid) == event.ctx.current
    assert (0, 0, True, True, False) == oom_of(k, pid)
    assert (pid,) == view.oom.reap_queue
    rss = view.by_pid[pid].rss[1]
    before, vmas = free_pages(k), k.space(pid).view().vmas
    assert pid == k.oom_reap()
    assert before + rss == free_pages(k)
    assert (-1000, 0, True, False, True) == oom_of(k, pid)
    assert 0 == k.view().by_pid[pid].rss[1]
    assert vmas == k.space(pid).view().vmas  # the VMAs stay
    assert 0 == k.oom_reap()  # the queue is empty


def test_child_is_sacrificed() -> None:
    """The parent is chosen (biggest) but its child with its own mm and a score above 0
    dies instead [4.6: mm/oom_kill.c oom_kill_process]."""
    k, pid = boot()
    child = k.fork(pid)
    populate(k, child, 8)
    populate(k, pid, 2560)
    populate(k, pid, 2560)
    event = k.view().oom.events[0]  # type: ignore[union-attr]
    assert event.result.choice is not None
    assert pid == event.result.choice.pid
    assert event.result.kill is not None
    assert (child, child) == event.result.kill.victim
    assert oom_of(k, child)[2:4] == (True, True)
    assert oom_of(k, pid)[2:4] == (False, False)


def test_second_oom_aborts_while_victim_dies() -> None:
    """A victim holding TIF_MEMDIE stops the scan: the next OOM kills nobody."""
    k, pid = boot()
    other = k.spawn()
    populate(k, pid, 2560)
    populate(k, pid, 2560)
    assert 0 == k.switch(1, other)
    assert 0 == k.fail_page_alloc(1)
    addr = k.mmap(other, 0, PAGE, RW, ANON)
    result = k.write(1, addr, b"x")
    assert isinstance(result, FaultResult)
    assert result.vm_fault & VM_FAULT_OOM
    events = k.view().oom.events  # type: ignore[union-attr]
    assert [("alloc", Outcome.KILLED), ("pagefault", Outcome.ABORTED)] == [
        (e.trigger, e.result.outcome) for e in events]
    assert not oom_of(k, other)[2]


def test_minus_thousand_never_chosen_and_panic_is_a_result() -> None:
    """With every process but init at -1000 an OOM finds nobody: the panic is recorded and
    the kernel keeps answering."""
    k, pid = boot()
    k.set_credentials(pid, cap_sys_admin=False, cap_sys_resource=True)
    assert 0 == k.set_oom_score_adj(pid, -1000)
    assert 0 == k.oom_score(pid)
    populate(k, pid, 2560)
    populate(k, pid, 2560)
    view = k.view()
    assert view.oom is not None
    assert PANIC_NO_KILLABLE == view.oom.panic
    assert all(e.result.outcome is Outcome.PANIC for e in view.oom.events)
    assert not oom_of(k, pid)[2]
    assert 0 == k.exit(pid)  # the model keeps running after the panic


def test_killed_process_runs_nothing() -> None:
    """A process with SIGKILL pending: user accesses end in its SIGKILL, kernel copies copy
    nothing, system calls return -EINTR, and nothing changes."""
    k, pid = boot()
    addr = populate(k, pid, 2)
    assert 0 == k.fail_page_alloc(1)
    fresh = k.mmap(pid, 0, PAGE, RW, ANON)
    result = k.write(0, fresh, b"x")
    assert isinstance(result, FaultResult)
    assert result.vm_fault & VM_FAULT_OOM
    assert "pagefault" == k.view().oom.events[-1].trigger  # type: ignore[union-attr]
    assert oom_of(k, pid)[2]
    before = k.view()
    assert FaultResult(signal=SIGKILL, si_code=0x80, addr=addr) == k.write(0, addr, b"y")
    assert FaultResult(signal=SIGKILL, si_code=0x80, addr=addr) == k.read(0, addr, 1)
    assert (3, bytes(3)) == k.copy_from_user(0, addr, 3)
    assert 3 == k.copy_to_user(0, addr, b"abc")
    assert -Errno.EINTR == k.mmap(pid, 0, PAGE, RW, ANON)
    assert -Errno.EINTR == k.munmap(pid, addr, PAGE)
    assert -Errno.EINTR == k.fork(pid)
    assert before == k.view()
    assert 0 == k.exit(pid)


def test_kernel_copy_fault_does_not_call_the_oom_killer() -> None:
    """copy_to_user runs in kernel mode: VM_FAULT_OOM goes to the exception fixup."""
    k, pid = boot()
    assert 0 == k.fail_page_alloc(1)
    addr = k.mmap(pid, 0, PAGE, RW, ANON)
    assert 1 == k.copy_to_user(0, addr, b"x")
    assert () == k.view().oom.events  # type: ignore[union-attr]


def test_without_the_oom_killer() -> None:
    """``oom=False``: no Capability.OOM, no OOM state in the views, the OOM calls refused
    with -ENOSYS, and VM_FAULT_OOM kills nobody (the kernel of issue 5)."""
    k = RefKernel(preset("tiny"), oom=False)
    assert Capability.OOM not in k.capabilities
    k.spawn()
    pid = k.spawn()
    k.switch(0, pid)
    assert -Errno.ENOSYS == k.set_oom_score_adj(pid, 0)
    assert -Errno.ENOSYS == k.oom_score(pid)
    assert -Errno.ENOSYS == k.oom_reap()
    k.fail_page_alloc(1)
    addr = k.mmap(pid, 0, PAGE, RW, ANON)
    assert isinstance(k.write(0, addr, b"x"), FaultResult)
    view = k.view()
    assert view.oom is None
    assert all(p.oom is None for p in view.processes)


@pytest.mark.parametrize("pages", [1, 300])
def test_exit_of_a_victim_returns_everything(pages: int) -> None:
    k, pid = boot()
    start = free_pages(k)
    populate(k, pid, pages)
    k.fail_page_alloc(1)
    k.write(0, k.mmap(pid, 0, PAGE, RW, ANON), b"x")
    assert oom_of(k, pid)[2]
    assert 0 == k.exit(pid)
    assert start + 1 == free_pages(k)  # its PGD too
    assert pid == k.oom_reap()  # the queued task has gone: nothing to do
