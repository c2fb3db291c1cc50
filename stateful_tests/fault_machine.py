"""The composed-kernel state machine, in lockstep and contract modes.

:func:`make_fault_machine` builds a machine that spawns, forks, switches and exits a few
processes over the CPUs, maps a few pages (private or shared, anonymous or file), unmaps
and re-protects pieces of them, and reads and writes small byte strings (each write's bytes
distinct from every other write's, so a store that leaks into another process shows) and
copies to and from user memory across holes.  The ledger records what each process wrote
where (FAULT-I1); at teardown every process exits, so FAULT-I7 sees the empty machine.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from invariants.fault import FaultLedger, FaultSnapshot
from invariants.fault_rules import SNAPSHOT_RULES, FaultStep
from invariants.registry import LOCKSTEP, CheckFailure
from refmodel.kernel import RefKernel
from refmodel.vma_madvise import dontneed_pieces
from specs import pte as pt
from specs.errno import Errno
from specs.kernel import Capability, FaultResult, KernelView
from specs.vma import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    VM_GROWSDOWN,
    VM_SHARED,
    MmView,
    page_align,
)
from specs.vma import Capability as VmaCapability
from stateful_tests.common import ConformanceMachine, MachineSpec, identifier, when_capable
from stateful_tests.harness import describe_call

PAGE = 4096
MAX_PROCS = 4
OPERATIONS = ("spawn", "fork", "exit", "switch", "read", "write", "copy_from_user",
              "copy_to_user", "open_file", "mmap", "munmap", "mprotect", "mremap", "brk",
              "fail_page_alloc", "madvise")
#: the madvise rule's advice, DONTNEED most often (it is the one that changes memory)
ADVICE = (MADV_DONTNEED, MADV_DONTNEED, MADV_DONTFORK, MADV_DOFORK)
#: Where a bad access goes (FAULT-R5): the kernel half, the non-canonical hole, the canonical
#: page above TASK_SIZE, the null page, below and at the foot of the stack (growth and the
#: guard page), beyond RLIMIT_STACK, the page before and after a mapping, an access
#: straddling a mapping's end, and a page of a mapping just made PROT_NONE (for a load) or
#: PROT_READ (for a store).
BAD_PLACES = ("kernel", "noncanonical", "top", "null", "below_stack", "stack_foot",
              "far_below_stack", "before_map", "after_map", "straddle", "protected")
ACCESS_OPS = ("read", "write", "copy_from_user", "copy_to_user")
#: how a machine mremap moves a mapping: in place only, MREMAP_MAYMOVE, or MAYMOVE | FIXED
REMAP_FLAGS = (0, MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED)
#: how many failure points a failing_fork or failing_store sweeps before giving up
SWEEP = 12
PROTS = (PROT_READ | PROT_WRITE,) * 4 + (PROT_READ, PROT_NONE)
#: (pages, shared, file) of the first process's mappings
START_MAPS = ((4, False, False), (2, True, False), (2, False, True))
#: what a file's first bytes are, so a file read fault has something to show
FILE_SEED = b"file-seed"


class FaultMachineBase(ConformanceMachine):
    """Shared machinery; :func:`make_fault_machine` adds the rules."""

    spec: ClassVar[MachineSpec]
    #: the kernel view since the last call (see kernel_view)
    _kview: KernelView | None = None

    def __init__(self) -> None:
        super().__init__()
        self.caps: frozenset[Capability] = self.boot(Capability)
        self.kernel: Any = self.sut.impl
        #: the reference runs the OOM killer only when the kernel under test has one, so
        #: that a kernel without it is compared with 4.6 minus the OOM killer
        self.ref: RefKernel | None = RefKernel(
            self.spec.config, oom=Capability.OOM in self.caps) \
            if self.spec.mode == "lockstep" else None
        self.select_checks("fault", self.caps, OPERATIONS)
        #: the operations a rule judges from the state before and after the step
        self.snapshot_ops = frozenset(op for op, checks in self.step_checks.items()
                                      if any(c.id in SNAPSHOT_RULES for c in checks))
        self.ledger = FaultLedger(free_at_boot=self._free_pages())
        #: pid -> the (addr, length) of each mapping the machine made in it (or inherited)
        self.maps: dict[int, list[tuple[int, int]]] = {}
        self.writes = 0
        # one process running on CPU 0 from the start, with a private, a shared and a file
        # mapping, so that most steps reach memory
        first = self.step("spawn")
        if isinstance(first, int) and first > 0:
            self.maps[first] = []
            self.step("switch", cpu=0, pid=first)
            for pages, shared, file in START_MAPS:
                self.map(first, pages, shared, file, PROT_READ | PROT_WRITE)

    def kernel_view(self) -> KernelView:
        """The kernel's view, read once between two calls: it lists every user page, and
        the rule helpers ask for it several times a step."""
        if self._kview is None:
            self._kview = self.sut.call("view", {})
        return self._kview

    def part_view(self, part: str) -> Any:
        """One part's view (``pages``, ``tables``, ``tlb``), read under the harness's guard."""
        return self.sut.read(f"{part}.view()", lambda: getattr(self.kernel, part).view())

    def space_view(self, pid: int) -> MmView:
        """A process's address-space view, read under the harness's guard."""
        view: MmView = self.sut.read(f"space({pid}).view()",
                                     lambda: self.kernel.space(pid).view())
        return view

    def _free_pages(self) -> int:
        view = self.part_view("pages")
        return sum(end - start for start, end in view.free_spans)

    # -- the step ------------------------------------------------------------------------------

    def step(self, op: str, **args: Any) -> Any:
        """One kernel call, in both models when in lockstep, judged by every enabled rule."""
        before = self.snapshot(contents=False) if op in self.snapshot_ops else None
        result = self.sut.call(op, args)
        self._kview = None
        if self.ref is not None and LOCKSTEP in self.spec.enabled:
            expected = getattr(self.ref, op)(**args)
            if result != expected:
                raise CheckFailure(LOCKSTEP, f"{describe_call(op, args)}: "
                                             f"{self.spec.impl_name} returned {result!r:.200}, "
                                             f"refmodel {expected!r:.200}")
            mine, theirs = self.kernel_view(), self.ref.view()
            if mine != theirs:
                raise CheckFailure(LOCKSTEP, f"after {describe_call(op, args)} the kernel views "
                                             f"differ: {view_difference(theirs, mine)}")
            if self.part_view("tables") != self.ref.tables.view():
                raise CheckFailure(LOCKSTEP, f"after {describe_call(op, args)} the page tables "
                                             f"differ from refmodel's")
            if self.part_view("tlb") != self.ref.tlb.view():
                raise CheckFailure(LOCKSTEP, f"after {describe_call(op, args)} the TLBs differ "
                                             f"from refmodel's")
        record = FaultStep(op=op, args=args, result=result, before=before,
                           after=self.snapshot() if before is not None else None)
        for check in self.step_checks[op]:
            problems = list(check.fn(record))
            if problems:
                raise CheckFailure(check.id, f"{check.title}:\n  " + "\n  ".join(problems))
        return result

    def snapshot(self, contents: bool = True) -> FaultSnapshot:
        """The composed state, read through the parts' views; ``contents=False`` for the
        'before' side of a step, whose contents would be read too late to be right."""
        k = self.kernel
        view = self.kernel_view()
        return FaultSnapshot(view=view, tables=self.part_view("tables"),
                             tlb=self.part_view("tlb"),
                             spaces={p.pid: self.space_view(p.pid) for p in view.processes},
                             pages=self.part_view("pages"),
                             page_contents=k.page_contents if contents else _not_kept,
                             file_contents=k.file_contents if contents else _not_kept,
                             ledger=self.ledger if contents else None)

    def invariants_hold(self) -> None:
        """Every enabled state invariant, after every step."""
        if not self.state_checks:
            return
        snap = self.snapshot()
        for check in self.state_checks:
            problems = list(check.fn(snap))
            if problems:
                raise CheckFailure(check.id, f"{check.title}:\n  " + "\n  ".join(problems)
                                   + f"\n{describe(snap.view)}")

    def teardown(self) -> None:
        """Every process exits, then the state invariants judge the empty machine."""
        for pid in self.pids():
            self.step("exit", pid=pid)
        self.invariants_hold()

    # -- helpers -------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The live processes, ascending."""
        return sorted(p.pid for p in self.kernel_view().processes)

    def pick(self, index: int) -> int:
        """A live pid by index, or 0 (no such process) when none lives."""
        pids = self.pids()
        return pids[index % len(pids)] if pids else 0

    def killed(self, pid: int) -> bool:
        """Whether the views say pid has SIGKILL pending (an OOM victim)."""
        proc = self.kernel_view().by_pid.get(pid)
        return proc is not None and proc.oom is not None and proc.oom.sigkill

    def bury_killed(self) -> None:
        """Exit every process with SIGKILL pending, as it would die on its way back to user
        mode: which ones an OOM kill chose is the kernel's business, read from its views."""
        for pid in self.pids():
            if self.killed(pid) and self.step("exit", pid=pid) == 0:
                self.maps.pop(pid, None)
                self.ledger.private.pop(pid, None)

    def on_cpu(self, index: int, cpu: int) -> tuple[int, int]:
        """(cpu, pid) for an access by a live process: the CPU it runs on, else ``cpu`` after
        switching it in (a recorded switch step); (cpu, 0) when no process lives, where the
        access must fail with -EINVAL.  Processes an OOM kill left dying exit first."""
        self.bury_killed()
        mapped = sorted(pid for pid, maps in self.maps.items() if maps)
        pid = mapped[index % len(mapped)] if mapped else self.pick(index)
        running = list(self.kernel_view().running)
        if pid and pid in running:
            return running.index(pid), pid
        if pid:
            self.step("switch", cpu=cpu, pid=pid)
        return cpu, pid

    def target(self, pid: int, mapping: int, page: int, offset: int) -> int:
        """An address in one of the machine's mappings of ``pid`` (possibly in a hole munmap
        left, or past the mapping's end)."""
        maps = self.maps.get(pid, [])
        if not maps:
            return 0x10000 + page * PAGE + offset
        addr, _length = maps[mapping % len(maps)]
        return addr + page * PAGE + offset

    def data(self, n: int) -> bytes:
        """n non-zero bytes no earlier write used at the same position."""
        self.writes += 1
        return bytes(1 + (self.writes * 37 + i * 11) % 255 for i in range(n))

    def record(self, cpu: int, addr: int, data: bytes) -> None:
        """Enter the bytes a store completed into the ledger, by the mapping they went
        through."""
        pid = self.kernel_view().running[cpu]
        proc = self.kernel_view().by_pid[pid]
        space = self.space_view(pid)
        files = dict(proc.files)
        for i, byte in enumerate(data):
            where = addr + i
            vma = space.find(where)
            if vma is None or vma.start > where:
                continue
            if vma.flags & VM_SHARED and vma.file in files:
                offset = where - vma.start + vma.pgoff * PAGE
                self.ledger.shared.setdefault(files[vma.file], {})[offset] = byte
            else:
                self.ledger.private.setdefault(pid, {})[where] = byte

    # -- rule bodies ---------------------------------------------------------------------------

    def do_spawn(self) -> None:
        """A freshly exec'd process."""
        self.trace.rule("spawn")
        pid = self.step("spawn")
        if isinstance(pid, int) and pid > 0:
            self.maps[pid] = []

    def do_fork(self, index: int) -> None:
        """fork: the child inherits the parent's mappings and what it wrote privately."""
        self.trace.rule("fork", index=index)
        self._fork(self.pick(index))

    def _fork(self, parent: int) -> int:
        """fork; the child's pid, or a negative errno."""
        child = self.step("fork", pid=parent)
        if not isinstance(child, int) or child <= 0:
            return -1
        self.ledger.private[child] = dict(self.ledger.private.get(parent, {}))
        # a MADV_DONTFORK range is not copied: the child has neither it nor its bytes
        space = self.space_view(child)
        self.maps[child] = [(addr, length) for addr, length in self.maps.get(parent, [])
                            if _mapped(space, addr, addr + length)]
        self.forget_unmapped(child)
        return child

    def do_exit(self, index: int) -> None:
        """exit: everything the process held goes."""
        self.trace.rule("exit", index=index)
        pid = self.pick(index)
        if self.step("exit", pid=pid) == 0:
            self.maps.pop(pid, None)
            self.ledger.private.pop(pid, None)

    def do_switch(self, cpu: int, index: int) -> None:
        """Run a process (index -1: the idle thread) on a CPU."""
        self.trace.rule("switch", cpu=cpu, index=index)
        self.step("switch", cpu=cpu, pid=-1 if index < 0 else self.pick(index))

    def do_migrate(self, index: int) -> None:
        """Move a running process to another CPU: its old CPU goes idle and stays lazy on the
        process's mm, with its TLB entries, until a flush makes it leave; that is the one way
        a second CPU holds translations of a single-task mm, as a thread's CPU would."""
        self.trace.rule("migrate", index=index)
        busy = [pid for pid in self.kernel_view().running if pid > 0]
        if busy and len(self.kernel_view().running) > 1:
            self._migrate(busy[index % len(busy)])

    def _migrate(self, pid: int) -> int:
        """Move pid from its CPU to another one, idling that CPU first when none is idle;
        the CPU it runs on afterwards (or -1 when it runs nowhere)."""
        running = list(self.kernel_view().running)
        if pid not in running:
            return -1
        here = running.index(pid)
        others = [cpu for cpu in range(len(running)) if cpu != here]
        if not others:
            return here
        target = next((cpu for cpu in others if running[cpu] == -1), others[0])
        if running[target] != -1:
            self.step("switch", cpu=target, pid=-1)
        self.step("switch", cpu=here, pid=-1)
        self.step("switch", cpu=target, pid=pid)
        return target

    def do_cow_scenario(self, index: int, cpu: int, mapping: int, page: int, offset: int,
                        child_writes: bool, round_trip: bool = False) -> None:
        """The life of a COW page in one rule: a process stores into a page, forks, loads it
        back (caching the read-only translation), moves to another CPU (the old one stays
        lazy on its mm) and stores again, which breaks COW with a stale entry to flush; with
        ``child_writes`` the child then runs on the lazy CPU and stores there too, into the
        page now mapped once, which do_wp_page reuses.  With ``round_trip`` the page is
        first made read-only and writable again by mprotect and stored to before the fork:
        a read-only PTE mapping a page once, which do_wp_page reuses too."""
        self.trace.rule("cow_scenario", index=index, cpu=cpu, mapping=mapping, page=page,
                        offset=offset, child_writes=child_writes, round_trip=round_trip)
        cpu, pid = self.on_cpu(index, cpu)
        if not pid:
            return
        addr = self.target(pid, mapping, page, offset)
        self._write(cpu, addr, self.data(4))
        if round_trip:
            start = addr & pt.PAGE_MASK
            self.step("mprotect", pid=pid, addr=start, length=PAGE, prot=PROT_READ)
            self.step("mprotect", pid=pid, addr=start, length=PAGE, prot=PROT_READ | PROT_WRITE)
            self._write(cpu, addr, self.data(4))
        child = self._fork(pid)
        self.step("read", cpu=cpu, addr=addr, n=4)
        lazy, cpu = cpu, self._migrate(pid)
        if cpu < 0:
            return
        self._write(cpu, addr, self.data(4))
        if child_writes and child > 0 and lazy != cpu:
            # switching the child in flushes the lazy CPU: judge the state it had first
            self.invariants_hold()
            self.step("switch", cpu=lazy, pid=child)
            self._write(lazy, addr, self.data(4))

    def do_mmap(self, index: int, pages: int, shared: bool, file: bool, prot: int) -> None:
        """A few pages, private or shared, anonymous or of a new file."""
        self.trace.rule("mmap", index=index, pages=pages, shared=shared, file=file, prot=prot)
        self.map(self.pick(index), pages, shared, file, prot)

    def map(self, pid: int, pages: int, shared: bool, file: bool, prot: int) -> None:
        """mmap (of a new file when ``file``) and remember the mapping."""
        length = pages * PAGE
        flags = MAP_SHARED if shared else MAP_PRIVATE
        fd = -1
        if file:
            fd = self.step("open_file", pid=pid, size=length, data=FILE_SEED)
            if not isinstance(fd, int) or fd < 0:
                return
        else:
            flags |= MAP_ANONYMOUS
        addr = self.step("mmap", pid=pid, addr=0, length=length, prot=prot, flags=flags, fd=fd)
        if isinstance(addr, int) and addr >= 0:
            self.maps.setdefault(pid, []).append((addr, length))

    def do_munmap(self, index: int, mapping: int, page: int, pages: int) -> None:
        """Unmap part of a mapping; what the process wrote there is gone."""
        self.trace.rule("munmap", index=index, mapping=mapping, page=page, pages=pages)
        pid = self.pick(index)
        maps = self.maps.get(pid, [])
        if not maps:
            return
        start = maps[mapping % len(maps)][0] + page * PAGE
        if self.step("munmap", pid=pid, addr=start, length=pages * PAGE) == 0:
            mine = self.ledger.private.get(pid, {})
            for addr in [a for a in mine if start <= a < start + pages * PAGE]:
                del mine[addr]

    def do_mprotect(self, index: int, mapping: int, page: int, pages: int, prot: int) -> None:
        """Re-protect part of a mapping."""
        self.trace.rule("mprotect", index=index, mapping=mapping, page=page, pages=pages,
                        prot=prot)
        pid = self.pick(index)
        maps = self.maps.get(pid, [])
        if maps:
            start = maps[mapping % len(maps)][0] + page * PAGE
            self.step("mprotect", pid=pid, addr=start, length=pages * PAGE, prot=prot)

    def do_madvise(self, index: int, mapping: int, page: int, pages: int, advice: int) -> None:
        """madvise on part of a mapping: DONTNEED drops what the process stored privately
        there (it reads back as zeros, or the file's bytes), shared contents stay; DONTFORK
        keeps the range out of later children, DOFORK lets it back in."""
        self.trace.rule("madvise", index=index, mapping=mapping, page=page, pages=pages,
                        advice=advice)
        pid = self.pick(index)
        maps = self.maps.get(pid, [])
        if not maps or VmaCapability.MADVISE not in self.sut.read(
                f"space({pid}).capabilities", lambda: self.kernel.space(pid).capabilities):
            return
        start, length = maps[mapping % len(maps)][0] + page * PAGE, pages * PAGE
        before = self.space_view(pid)
        result = self.step("madvise", pid=pid, addr=start, length=length, advice=advice)
        if advice == MADV_DONTNEED and result in (0, -Errno.ENOMEM, -Errno.EINVAL):
            for lo, hi in dontneed_pieces(before, start, length):
                self.forget(pid, lo, hi)

    def do_read(self, index: int, cpu: int, mapping: int, page: int, offset: int,
                n: int) -> None:
        """User loads."""
        self.trace.rule("read", index=index, cpu=cpu, mapping=mapping, page=page,
                            offset=offset, n=n)
        cpu, pid = self.on_cpu(index, cpu)
        self.step("read", cpu=cpu, addr=self.target(pid, mapping, page, offset), n=n)

    def do_write(self, index: int, cpu: int, mapping: int, page: int, offset: int,
                 n: int) -> None:
        """User stores of bytes no other write used."""
        self.trace.rule("write", index=index, cpu=cpu, mapping=mapping, page=page,
                             offset=offset, n=n)
        cpu, pid = self.on_cpu(index, cpu)
        self._write(cpu, self.target(pid, mapping, page, offset), self.data(n))

    def _write(self, cpu: int, addr: int, data: bytes) -> int:
        """A store, entered into the ledger as far as it went; the bytes stored."""
        result = self.step("write", cpu=cpu, addr=addr, data=data)
        done = len(data) if result == len(data) else \
            result.done if isinstance(result, FaultResult) else 0
        if done:
            self.record(cpu, addr, data[:done])
        return done

    def do_copy_from_user(self, index: int, cpu: int, mapping: int, page: int, offset: int,
                          n: int) -> None:
        """A kernel copy out of user memory, possibly across a hole."""
        self.trace.rule("copy_from_user", index=index, cpu=cpu, mapping=mapping, page=page,
                                      offset=offset, n=n)
        cpu, pid = self.on_cpu(index, cpu)
        self.step("copy_from_user", cpu=cpu, addr=self.target(pid, mapping, page, offset), n=n)

    def do_copy_to_user(self, index: int, cpu: int, mapping: int, page: int, offset: int,
                        n: int) -> None:
        """A kernel copy into user memory (breaks COW like a user store)."""
        self.trace.rule("copy_to_user", index=index, cpu=cpu, mapping=mapping, page=page,
                                    offset=offset, n=n)
        cpu, pid = self.on_cpu(index, cpu)
        self._copy_to_user(cpu, self.target(pid, mapping, page, offset), self.data(n))

    def _copy_to_user(self, cpu: int, addr: int, data: bytes) -> None:
        left = self.step("copy_to_user", cpu=cpu, addr=addr, data=data)
        if isinstance(left, int) and 0 <= left < len(data):
            self.record(cpu, addr, data[:len(data) - left])

    # -- allocation failures -------------------------------------------------------------------

    def do_fail_page_alloc(self, times: int, space: int) -> None:
        """Arm page-allocation failure injection: once ``space`` pages are spent, the next
        ``times`` allocations fail (0 disarms), wherever they fall: a fork's tables, a
        fault's tables or its data page.  Nothing the machine does assumes which process
        survives a failure (an OOM kill may follow one)."""
        self.trace.rule("fail_page_alloc", times=times, space=space)
        self.step("fail_page_alloc", times=times, space=space)

    def do_failing_fork(self, index: int, space: int) -> None:
        """Fault injection swept across one fork: the first try fails once ``space`` pages
        are spent, each retry one page later, until a fork succeeds (and its child exits), so
        the failure lands in turn on the child's PGD and on each table copy_page_range
        allocates."""
        self.trace.rule("failing_fork", index=index, space=space)
        parent = self.pick(index)
        for budget in range(space, space + SWEEP):
            self.step("fail_page_alloc", times=1, space=budget)
            child = self._fork(parent)
            if child > 0:
                # the child was the means, not the end: it exits, so the machine keeps room
                # for the forks its other rules make
                if self.step("exit", pid=child) == 0:
                    self.maps.pop(child, None)
                    self.ledger.private.pop(child, None)
                break
            if self.killed(parent):
                break
        self.step("fail_page_alloc", times=0, space=0)
        self.bury_killed()

    def do_failing_store(self, index: int, cpu: int, mapping: int, page: int,
                         fresh_file: bool) -> None:
        """Fault injection swept across one store, as for a fork: the failure lands in turn
        on each table page, the data page and (``fresh_file``: a new private file mapping,
        nothing cached) the page-cache page the COW fault copies from after its anon page
        was allocated."""
        self.trace.rule("failing_store", index=index, cpu=cpu, mapping=mapping, page=page,
                        fresh_file=fresh_file)
        cpu, pid = self.on_cpu(index, cpu)
        if fresh_file and pid:
            self.map(pid, 2, False, True, PROT_READ | PROT_WRITE)
            mapping = len(self.maps.get(pid, [])) - 1
        addr = self.target(pid, mapping, page, 0)
        for budget in range(SWEEP):
            self.step("fail_page_alloc", times=1, space=budget)
            data = self.data(2)
            if self._write(cpu, addr, data) == len(data) or self.killed(pid):
                break
        self.step("fail_page_alloc", times=0, space=0)
        self.bury_killed()

    # -- bad addresses ------------------------------------------------------------------------

    def bad_address(self, pid: int, place: str, mapping: int, page: int) -> int:
        """An address of the kind ``place`` names (BAD_PLACES) for pid."""
        fixed = {"kernel": 0xFFFF_8800_0000_0000, "noncanonical": 1 << pt.VIRTUAL_MASK_SHIFT,
                 "top": pt.TASK_SIZE_MAX, "null": 0}
        if place in fixed:
            return fixed[place] + page * PAGE
        if place.endswith("stack") or place == "stack_foot":
            vmas = self.space_view(pid).vmas if pid else ()
            foot: int | None = next((v.start for v in vmas if v.flags & VM_GROWSDOWN), None)
            if foot is None:
                return page * PAGE
            below = {"below_stack": (1 + page) * PAGE, "stack_foot": -page * PAGE,
                     "far_below_stack": 9 << 20}[place]
            return foot - below
        maps = self.maps.get(pid) or [(0x10000, PAGE)]
        addr, length = maps[mapping % len(maps)]
        return {"before_map": addr - (1 + page) * PAGE, "after_map": addr + length + page * PAGE,
                "straddle": addr + length - 2}[place]

    def do_bad_access(self, index: int, cpu: int, place: str, mapping: int, page: int,
                      op: str, n: int) -> None:
        """A load, store or user copy at a bad or borderline address (BAD_PLACES)."""
        self.trace.rule("bad_access", index=index, cpu=cpu, place=place, mapping=mapping,
                        page=page, op=op, n=n)
        cpu, pid = self.on_cpu(index, cpu)
        if place == "protected":
            addr = self.target(pid, mapping, page, 0)
            store = op in ("write", "copy_to_user")
            self.step("mprotect", pid=pid, addr=addr, length=PAGE,
                      prot=PROT_READ if store else PROT_NONE)
        else:
            addr = self.bad_address(pid, place, mapping, page)
        if op == "read":
            self.step("read", cpu=cpu, addr=addr, n=n)
        elif op == "write":
            self._write(cpu, addr, self.data(n))
        elif op == "copy_from_user":
            self.step("copy_from_user", cpu=cpu, addr=addr, n=n)
        else:
            self._copy_to_user(cpu, addr, self.data(n))

    # -- brk and mremap ------------------------------------------------------------------------

    def forget(self, pid: int, start: int, end: int) -> dict[int, int]:
        """Drop (and return) what pid stored privately in [start, end): it is unmapped."""
        mine = self.ledger.private.get(pid, {})
        gone = {a: mine.pop(a) for a in [a for a in mine if start <= a < end]}
        return gone

    def forget_unmapped(self, pid: int) -> None:
        """Drop what pid stored privately at addresses no VMA covers any more."""
        space = self.space_view(pid)
        mine = self.ledger.private.get(pid, {})
        for addr in list(mine):
            vma = space.find(addr)
            if vma is None or vma.start > addr:
                del mine[addr]

    def do_brk(self, index: int, pages: int, offset: int) -> None:
        """Grow or shrink the heap by a few pages; the heap joins the machine's mappings."""
        self.trace.rule("brk", index=index, pages=pages, offset=offset)
        pid = self.pick(index)
        if not pid:
            return
        view = self.space_view(pid)
        old, base = view.brk, view.start_brk
        new = self.step("brk", pid=pid, addr=max(old + pages * PAGE + offset, 0))
        if not isinstance(new, int) or new < 0:
            return
        if page_align(new) < page_align(old):
            self.forget(pid, page_align(new), page_align(old))
        maps = [m for m in self.maps.get(pid, []) if m[0] != base]
        if page_align(new) > base:
            maps.append((base, page_align(new) - base))
        self.maps[pid] = maps

    def do_mremap(self, index: int, mapping: int, pages: int, how: int, dest: int) -> None:
        """Resize a mapping in place, or move it (MREMAP_MAYMOVE, or MREMAP_FIXED onto
        another mapping or a hole); what the process stored there moves with it."""
        self.trace.rule("mremap", index=index, mapping=mapping, pages=pages, how=how,
                        dest=dest)
        pid = self.pick(index)
        maps = self.maps.get(pid, [])
        if not maps:
            return
        old, old_len = maps[mapping % len(maps)]
        flags, new_len = REMAP_FLAGS[how % len(REMAP_FLAGS)], pages * PAGE
        places = [a for a, _ in maps if a != old] + [old + 64 * PAGE]
        new_addr = places[dest % len(places)] if flags & MREMAP_FIXED else 0
        result = self.step("mremap", pid=pid, old_addr=old, old_len=old_len, new_len=new_len,
                           flags=flags, new_addr=new_addr)
        if not isinstance(result, int) or result < 0:
            # a failed MREMAP_FIXED may have unmapped its target (and a shrink the old tail)
            # before it failed [4.6: mm/mremap.c mremap_to]
            self.forget_unmapped(pid)
            return
        if flags & MREMAP_FIXED:
            self.forget(pid, new_addr, new_addr + new_len)
        kept = min(old_len, new_len)
        moved = self.forget(pid, old, old + old_len)
        mine = self.ledger.private.setdefault(pid, {})
        mine.update({a - old + result: b for a, b in moved.items() if a < old + kept})
        self.maps[pid] = [(result, new_len) if m == (old, old_len) else m for m in maps]


def _mapped(space: MmView, start: int, end: int) -> bool:
    """Whether any VMA of the space meets [start, end)."""
    vma = space.find(start)
    return vma is not None and vma.start < end


def _not_kept(*args: int) -> bytes:
    raise RuntimeError("a 'before' snapshot keeps no page or file contents")


def describe(view: KernelView) -> str:
    """Processes and CPUs in one line, for a failure message."""
    procs = ", ".join(f"pid {p.pid} (mm {p.mm}, parent {p.ppid}, rss {list(p.rss)})"
                      for p in view.processes) or "no process"
    return f"{procs}; running {list(view.running)}; {len(view.pages)} user pages"


def view_difference(expected: KernelView, actual: KernelView) -> str:
    """The first field where two kernel views differ, in words."""
    for field in ("processes", "running", "pages", "inodes", "zero_pfn", "stray"):
        want, got = getattr(expected, field), getattr(actual, field)
        if want != got:
            if isinstance(want, tuple) and len(want) == len(got):
                want, got = next((w, g) for w, g in zip(want, got, strict=True) if w != g)
            return f"{field}: {got!r:.300}, refmodel {want!r:.300}"
    return "(equal)"


def make_fault_machine(spec: MachineSpec) -> type[FaultMachineBase]:
    """A machine class for one implementation, mode and machine."""
    cpus = st.integers(0, spec.config.nr_cpus - 1)
    procs = st.integers(0, MAX_PROCS - 1)
    maps = st.integers(0, 3)
    pages = st.integers(0, 2)
    offsets = st.sampled_from([0, 1, 100, PAGE - 4])
    sizes = st.integers(1, 12)

    class FaultMachine(FaultMachineBase):
        @precondition(lambda self: len(self.maps) < MAX_PROCS)
        @rule()
        def spawn(self) -> None:
            self.do_spawn()

        @precondition(lambda self: len(self.maps) < MAX_PROCS)
        @when_capable(spec, Capability.FORK)
        @precondition(lambda self: bool(self.maps))
        @rule(index=procs)
        def fork(self, index: int) -> None:
            self.do_fork(index)

        @precondition(lambda self: len(self.maps) > 1)
        @rule(index=procs)
        def exit(self, index: int) -> None:
            self.do_exit(index)

        @rule(cpu=cpus, index=st.integers(-1, MAX_PROCS - 1))
        def switch(self, cpu: int, index: int) -> None:
            self.do_switch(cpu, index)

        @precondition(lambda self: bool(self.maps) and len(self.maps) < MAX_PROCS)
        @when_capable(spec, Capability.FORK)
        @rule(index=procs, cpu=cpus, mapping=maps, page=pages, offset=offsets,
              child_writes=st.booleans(), round_trip=st.booleans())
        def cow_scenario(self, index: int, cpu: int, mapping: int, page: int, offset: int,
                         child_writes: bool, round_trip: bool) -> None:
            self.do_cow_scenario(index, cpu, mapping, page, offset, child_writes, round_trip)

        @rule(index=procs)
        def migrate(self, index: int) -> None:
            self.do_migrate(index)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, pages=st.integers(1, 4), shared=st.booleans(), file=st.booleans(),
              prot=st.sampled_from(PROTS))
        def mmap(self, index: int, pages: int, shared: bool, file: bool, prot: int) -> None:
            self.do_mmap(index, pages, shared, file, prot)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, mapping=maps, page=pages, pages=st.integers(1, 2))
        def munmap(self, index: int, mapping: int, page: int, pages: int) -> None:
            self.do_munmap(index, mapping, page, pages)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, mapping=maps, page=pages, pages=st.integers(1, 2),
              prot=st.sampled_from(PROTS))
        def mprotect(self, index: int, mapping: int, page: int, pages: int, prot: int) -> None:
            self.do_mprotect(index, mapping, page, pages, prot)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, mapping=maps, page=pages, pages=st.integers(1, 3),
              advice=st.sampled_from(ADVICE))
        def madvise(self, index: int, mapping: int, page: int, pages: int, advice: int) -> None:
            self.do_madvise(index, mapping, page, pages, advice)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, cpu=cpus, mapping=maps, page=pages, offset=offsets, n=sizes)
        def read(self, index: int, cpu: int, mapping: int, page: int, offset: int, n: int) -> None:
            self.do_read(index, cpu, mapping, page, offset, n)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, cpu=cpus, mapping=maps, page=pages, offset=offsets, n=sizes)
        def write(self, index: int, cpu: int, mapping: int, page: int, offset: int, n: int) -> None:
            self.do_write(index, cpu, mapping, page, offset, n)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, cpu=cpus, mapping=maps, page=pages, offset=offsets,
              n=st.integers(1, 2 * PAGE))
        def copy_from_user(self, index: int, cpu: int, mapping: int, page: int, offset: int,
                           n: int) -> None:
            self.do_copy_from_user(index, cpu, mapping, page, offset, n)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, cpu=cpus, mapping=maps, page=pages, offset=offsets, n=sizes)
        def copy_to_user(self, index: int, cpu: int, mapping: int, page: int, offset: int,
                         n: int) -> None:
            self.do_copy_to_user(index, cpu, mapping, page, offset, n)

        @when_capable(spec, Capability.FAIL_PAGE_ALLOC)
        @rule(times=st.sampled_from([0, 1, 1, 2, 3]), space=st.integers(0, 6))
        def fail_page_alloc(self, times: int, space: int) -> None:
            self.do_fail_page_alloc(times, space)

        @precondition(lambda self: bool(self.maps) and len(self.maps) < MAX_PROCS)
        @when_capable(spec, Capability.FAIL_PAGE_ALLOC)
        @when_capable(spec, Capability.FORK)
        @rule(index=procs, space=st.integers(0, 2))
        def failing_fork(self, index: int, space: int) -> None:
            self.do_failing_fork(index, space)

        @precondition(lambda self: bool(self.maps))
        @when_capable(spec, Capability.FAIL_PAGE_ALLOC)
        @rule(index=procs, cpu=cpus, mapping=maps, page=st.integers(0, 1),
              fresh_file=st.booleans())
        def failing_store(self, index: int, cpu: int, mapping: int, page: int,
                          fresh_file: bool) -> None:
            self.do_failing_store(index, cpu, mapping, page, fresh_file)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, cpu=cpus, place=st.sampled_from(BAD_PLACES), mapping=maps,
              page=pages, op=st.sampled_from(ACCESS_OPS), n=st.sampled_from([1, 8, PAGE + 8]))
        def bad_access(self, index: int, cpu: int, place: str, mapping: int, page: int,
                       op: str, n: int) -> None:
            self.do_bad_access(index, cpu, place, mapping, page, op, n)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, pages=st.integers(-3, 4), offset=st.sampled_from([0, 0, 100]))
        def brk(self, index: int, pages: int, offset: int) -> None:
            self.do_brk(index, pages, offset)

        @precondition(lambda self: bool(self.maps))
        @rule(index=procs, mapping=maps, pages=st.integers(1, 6), how=st.integers(0, 2),
              dest=st.integers(0, 3))
        def mremap(self, index: int, mapping: int, pages: int, how: int, dest: int) -> None:
            self.do_mremap(index, mapping, pages, how, dest)

    FaultMachine.spec = spec
    FaultMachine.__name__ = FaultMachine.__qualname__ = (
        f"Fault{spec.mode.capitalize()}_{identifier(spec.impl_name)}")
    return FaultMachine


__all__ = ["FaultMachineBase", "make_fault_machine"]
