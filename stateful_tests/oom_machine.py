"""The OOM machine: processes driven into memory pressure on the composed kernel, in
lockstep and contract modes.

:func:`make_oom_machine` reuses the fault machine's skeleton (boot, lockstep comparison,
snapshots, process bookkeeping) and adds what makes the OOM killer run and matter: big
private writable mappings populated at mmap time (``MAP_POPULATE``) that exhaust the tiny
preset's 16 MiB, one-shot page-allocation failures that make a single write fault end in
VM_FAULT_OOM (the cheap way to run ``pagefault_out_of_memory``), fork trees so children can
be sacrificed, ``oom_score_adj`` writes (-1000 and out-of-range values included),
credentials, ``/proc/<pid>/oom_score`` reads, the reaper, and overcommit pressure: the
machine-wide sysctls switched to OVERCOMMIT_NEVER (or back) while several processes commit
large private writable regions without touching them.  Pid 1 is global init, which
the OOM killer never chooses; the others are fair game.  Each step is judged with the
snapshots before and after it (``invariants.oom_rules.OomStep``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from invariants.fault import FaultSnapshot
from invariants.oom_rules import OomStep
from invariants.registry import CheckFailure
from specs.kernel import Capability
from specs.vma import (
    MAP_ANONYMOUS,
    MAP_POPULATE,
    MAP_PRIVATE,
    OVERCOMMIT_GUESS,
    PROT_READ,
    PROT_WRITE,
)
from stateful_tests.common import MachineSpec, identifier, when_capable
from stateful_tests.fault_machine import PAGE, FaultMachineBase

MAX_PROCS = 6
OPERATIONS = ("spawn", "fork", "exit", "switch", "read", "write", "copy_from_user",
              "copy_to_user", "open_file", "mmap", "munmap", "mprotect", "fail_page_alloc",
              "set_oom_score_adj", "set_credentials", "oom_score", "oom_reap", "set_sysctl")
#: populate sizes in pages: small ones build RSS differences, two big ones exhaust tiny
HOG_PAGES = (8, 64, 512, 1536, 2560)
#: oom_score_adj values: the limits, just outside them, and the ones that matter on tiny
#: (totalpages / 1000 is 4 there, so one unit of adj is worth 4 pages)
ADJ_VALUES = (250, 1000, -500, -1000, 1, -999, 0, -1, 1001, -1001)
#: overcommit_memory values: NEVER most of all, the other two, and two 4.6 refuses
OVERCOMMIT_MODES = (2, 2, 0, 1, 3, -1)
#: overcommit_ratio values (percent of RAM NEVER lets processes commit)
OVERCOMMIT_RATIOS = (50, 100, 25, 0)
#: how much of that limit each process commits, in percent: one fits, two do not
COMMIT_SHARES = (60, 90, 30, 120)
#: how many processes commit at once
COMMITTERS = 3


class OomMachineBase(FaultMachineBase):
    """The fault machine's skeleton, judged by the OOM checks."""

    #: the snapshot of the state since the last step (None: take a new one)
    _cached: FaultSnapshot | None = None

    def __init__(self) -> None:
        super().__init__()
        self.select_checks("oom", self.caps, OPERATIONS)
        #: the OOM step rules, run by :meth:`step` with before/after snapshots; the fault
        #: machine's own step loop sees none
        self.oom_checks = self.step_checks
        self.step_checks = {op: [] for op in OPERATIONS}
        # init (pid 1) is never a victim: give it a child from the start, so that memory
        # pressure has someone to kill
        if self.pids() == [1] and Capability.FORK in self.caps:
            if self.maps.get(1):
                self._write(0, self.maps[1][0][0], self.data(4))  # a page the child inherits
            child = self._fork(1)
            if child > 0 and Capability.OOM in self.caps:
                # a root daemon: its adj writes may go down to -1000, and its badness
                # gets the admin discount (its children inherit both)
                self.step("set_credentials", pid=child, cap_sys_admin=True,
                          cap_sys_resource=True)

    def step(self, op: str, **args: Any) -> Any:
        """One kernel call (lockstep-compared by the fault machine), judged by the OOM rules
        on the snapshots around it."""
        checks = self.oom_checks.get(op, []) if hasattr(self, "oom_checks") else []
        before = self.snapshot() if checks else None
        self._cached = None
        result = super().step(op, **args)
        self._cached = None
        if before is not None:
            record = OomStep(op=op, args=args, result=result, before=before,
                             after=self.snapshot())
            for check in checks:
                problems = list(check.fn(record))
                if problems:
                    raise CheckFailure(check.id, f"{check.title}:\n  "
                                       + "\n  ".join(problems))
        return result

    def snapshot(self, *args: Any, **kwargs: Any) -> FaultSnapshot:
        """The composed state; taken once per step (a kernel view lists every user page, so
        the rules' 'after' snapshot is also the invariants' and the rules' pid lists')."""
        cached = self._cached
        if cached is None or args or kwargs:
            cached = super().snapshot(*args, **kwargs)
            if not args and not kwargs:
                self._cached = cached
        return cached

    def pids(self) -> list[int]:
        """The live processes, ascending, from the step's snapshot."""
        return sorted(p.pid for p in self.snapshot().view.processes)

    def on_cpu(self, index: int, cpu: int) -> tuple[int, int]:
        """(cpu, pid) for an access, switching the process in first if needed; unlike the
        fault machine, a process with SIGKILL pending is not made to exit first: here it
        tries its accesses (OOM-R6) and waits for the reaper or an exit rule."""
        mapped = sorted(pid for pid, maps in self.maps.items() if maps)
        return self.run_on(mapped[index % len(mapped)] if mapped else self.pick(index), cpu)

    def run_on(self, pid: int, cpu: int) -> tuple[int, int]:
        """(cpu, pid) with pid running there (switched in on ``cpu`` unless it runs)."""
        running = list(self.snapshot().view.running)
        if pid and pid in running:
            return running.index(pid), pid
        if pid:
            self.step("switch", cpu=cpu, pid=pid)
        return cpu, pid

    def pick_user(self, index: int) -> int:
        """A live pid other than init's by index (init when it is alone): memory pressure
        from init can only end in a panic, since init is never a victim."""
        pids = [pid for pid in self.pids() if pid != 1]
        return pids[index % len(pids)] if pids else self.pick(index)

    # -- rule bodies ---------------------------------------------------------------------------

    def do_hog(self, index: int, pages: int, fork_after: bool) -> None:
        """A private writable anonymous mapping populated at mmap time: pages of memory
        taken at once, the OOM killer running when they run out; with ``fork_after`` the
        process then forks a worker sharing them (COW), a child the OOM killer would
        sacrifice for it."""
        self.trace.rule("hog", index=index, pages=pages, fork_after=fork_after)
        pid = self.pick_user(index)
        addr = self.step("mmap", pid=pid, addr=0, length=pages * PAGE,
                         prot=PROT_READ | PROT_WRITE,
                         flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
        if isinstance(addr, int) and addr >= 0:
            self.maps.setdefault(pid, []).append((addr, pages * PAGE))
        if fork_after and len(self.pids()) < MAX_PROCS and Capability.FORK in self.caps:
            self._fork(pid)

    def do_oom_fault(self, index: int, cpu: int) -> None:
        """A write to a fresh page whose allocation is made to fail once: the fault ends in
        VM_FAULT_OOM and pagefault_out_of_memory runs."""
        self.trace.rule("oom_fault", index=index, cpu=cpu)
        cpu, pid = self.run_on(self.pick_user(index), cpu)
        if not pid:
            return
        addr = self.step("mmap", pid=pid, addr=0, length=PAGE, prot=PROT_READ | PROT_WRITE,
                         flags=MAP_PRIVATE | MAP_ANONYMOUS)
        if not isinstance(addr, int) or addr < 0:
            return
        self.maps.setdefault(pid, []).append((addr, PAGE))
        self.step("fail_page_alloc", times=1)
        self._write(cpu, addr, self.data(4))
        self.step("fail_page_alloc", times=0)

    def do_set_adj(self, index: int, value: int) -> None:
        """The process writes its own oom_score_adj and reads its oom_score back."""
        self.trace.rule("set_adj", index=index, value=value)
        pid = self.pick_user(index)
        self.step("set_oom_score_adj", pid=pid, value=value)
        self.step("oom_score", pid=pid)

    def do_protect(self, index: int) -> None:
        """What a daemon manager does to shield a process: CAP_SYS_RESOURCE, then
        oom_score_adj -1000 (never chosen; its children inherit it)."""
        self.trace.rule("protect", index=index)
        pid = self.pick_user(index)
        self.step("set_credentials", pid=pid, cap_sys_admin=False, cap_sys_resource=True)
        self.step("set_oom_score_adj", pid=pid, value=-1000)

    def do_set_credentials(self, index: int, admin: bool, resource: bool) -> None:
        """Change the process's capabilities and read its oom_score back."""
        self.trace.rule("set_credentials", index=index, admin=admin, resource=resource)
        pid = self.pick_user(index)
        self.step("set_credentials", pid=pid, cap_sys_admin=admin, cap_sys_resource=resource)
        self.step("oom_score", pid=pid)

    def do_oom_score(self, index: int) -> None:
        self.trace.rule("oom_score", index=index)
        self.step("oom_score", pid=self.pick(index))

    def do_oom_reap(self) -> None:
        self.trace.rule("oom_reap")
        pid = self.step("oom_reap")
        if isinstance(pid, int) and pid > 0:
            self.ledger.private.pop(pid, None)

    def do_overcommit(self, mode: int, ratio: int, kbytes: bool, share: int, fork_after: bool,
                      restore: bool) -> None:
        """The machine-wide sysctls are written (the ratio, or the same limit in kbytes),
        then up to three processes each map ``share`` percent of that limit private and
        writable without touching it (VM_ACCOUNT: charged, nothing allocated); with
        ``fork_after`` the last of them forks, charging its copy again; then the regions go
        and, with ``restore``, GUESS comes back."""
        self.trace.rule("overcommit", mode=mode, ratio=ratio, kbytes=kbytes, share=share,
                        fork_after=fork_after, restore=restore)
        self.step("set_sysctl", name="overcommit_memory", value=mode)
        limit = self.spec.config.nr_pages * ratio // 100
        if kbytes:
            self.step("set_sysctl", name="overcommit_kbytes", value=limit * PAGE // 1024)
        else:
            self.step("set_sysctl", name="overcommit_ratio", value=ratio)
        length = max(limit * share // 100, 1) * PAGE
        mapped: list[tuple[int, int]] = []
        for pid in self.pids()[:COMMITTERS]:
            addr = self.step("mmap", pid=pid, addr=0, length=length,
                             prot=PROT_READ | PROT_WRITE, flags=MAP_PRIVATE | MAP_ANONYMOUS)
            if isinstance(addr, int) and addr >= 0:
                mapped.append((pid, addr))
        if fork_after and mapped and len(self.pids()) < MAX_PROCS \
                and Capability.FORK in self.caps:
            self._fork(mapped[-1][0])
        for pid, addr in mapped:
            self.step("munmap", pid=pid, addr=addr, length=length)
        if restore:
            self.step("set_sysctl", name="overcommit_memory", value=OVERCOMMIT_GUESS)

    def do_exit_victim(self, reap_first: bool) -> None:
        """The first process with SIGKILL pending exits, as it would on its own; with
        ``reap_first`` the reaper gets to it first (or to whoever heads its queue)."""
        self.trace.rule("exit_victim", reap_first=reap_first)
        if reap_first:
            self.step("oom_reap")
        dying = [p.pid for p in self.snapshot().view.processes if p.oom is not None
                 and p.oom.sigkill]
        if dying and self.step("exit", pid=dying[0]) == 0:
            self.maps.pop(dying[0], None)
            self.ledger.private.pop(dying[0], None)


def make_oom_machine(spec: MachineSpec) -> type[OomMachineBase]:
    """A machine class for one implementation, mode and machine."""
    cpus = st.integers(0, spec.config.nr_cpus - 1)
    procs = st.integers(0, MAX_PROCS - 1)

    class OomMachine(OomMachineBase):
        @precondition(lambda self: len(self.pids()) < MAX_PROCS)
        @rule()
        def spawn(self) -> None:
            self.do_spawn()

        @precondition(lambda self: len(self.pids()) < MAX_PROCS)
        @when_capable(spec, Capability.FORK)
        @rule(index=procs)
        def fork(self, index: int) -> None:
            self.do_fork(index)

        @precondition(lambda self: len(self.pids()) > 2)
        @rule(index=procs)
        def exit(self, index: int) -> None:
            self.do_exit(index)

        @when_capable(spec, Capability.OOM)
        @rule(reap_first=st.booleans())
        def exit_victim(self, reap_first: bool) -> None:
            self.do_exit_victim(reap_first)

        @rule(cpu=cpus, index=st.integers(-1, MAX_PROCS - 1))
        def switch(self, cpu: int, index: int) -> None:
            self.do_switch(cpu, index)

        @precondition(lambda self: len(self.pids()) > 1)
        @rule(index=procs, pages=st.sampled_from(HOG_PAGES), fork_after=st.booleans())
        def hog(self, index: int, pages: int, fork_after: bool) -> None:
            self.do_hog(index, pages, fork_after)

        @precondition(lambda self: len(self.pids()) > 1)
        @when_capable(spec, Capability.FAIL_PAGE_ALLOC)
        @rule(index=procs, cpu=cpus)
        def oom_fault(self, index: int, cpu: int) -> None:
            self.do_oom_fault(index, cpu)

        @rule(index=procs, cpu=cpus, mapping=st.integers(0, 7), page=st.integers(0, 2),
              offset=st.sampled_from([0, 100]), n=st.integers(1, 8))
        def write(self, index: int, cpu: int, mapping: int, page: int, offset: int,
                  n: int) -> None:
            self.do_write(index, cpu, mapping, page, offset, n)

        @rule(index=procs, cpu=cpus, mapping=st.integers(0, 7), page=st.integers(0, 2),
              offset=st.sampled_from([0, 100]), n=st.integers(1, 8))
        def copy_to_user(self, index: int, cpu: int, mapping: int, page: int, offset: int,
                         n: int) -> None:
            self.do_copy_to_user(index, cpu, mapping, page, offset, n)

        @when_capable(spec, Capability.OOM)
        @rule(index=procs, value=st.sampled_from(ADJ_VALUES))
        def set_adj(self, index: int, value: int) -> None:
            self.do_set_adj(index, value)

        @when_capable(spec, Capability.OOM)
        @rule(index=procs)
        def protect(self, index: int) -> None:
            self.do_protect(index)

        @when_capable(spec, Capability.OOM)
        @rule(index=procs, admin=st.booleans(), resource=st.booleans())
        def set_credentials(self, index: int, admin: bool, resource: bool) -> None:
            self.do_set_credentials(index, admin, resource)

        @when_capable(spec, Capability.OOM)
        @rule(index=procs)
        def oom_score(self, index: int) -> None:
            self.do_oom_score(index)

        @when_capable(spec, Capability.OOM)
        @rule()
        def oom_reap(self) -> None:
            self.do_oom_reap()

        @precondition(lambda self: len(self.pids()) > 1)
        @when_capable(spec, Capability.OVERCOMMIT)
        @rule(mode=st.sampled_from(OVERCOMMIT_MODES), ratio=st.sampled_from(OVERCOMMIT_RATIOS),
              kbytes=st.booleans(), share=st.sampled_from(COMMIT_SHARES),
              fork_after=st.booleans(), restore=st.sampled_from((True, True, False)))
        def overcommit(self, mode: int, ratio: int, kbytes: bool, share: int,
                       fork_after: bool, restore: bool) -> None:
            self.do_overcommit(mode, ratio, kbytes, share, fork_after, restore)

    OomMachine.spec = spec
    OomMachine.__name__ = OomMachine.__qualname__ = (
        f"Oom{spec.mode.capitalize()}_{identifier(spec.impl_name)}")
    return OomMachine


__all__ = ["OomMachineBase", "make_oom_machine"]
