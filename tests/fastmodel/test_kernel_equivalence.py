"""fastmodel's composed kernel against the reference kernel: the same calls give the same
results, and after every call every view (kernel, page tables, TLBs, page allocator, each
address space) and every page's and file's contents are equal.

Both kernels run with the OOM killer (the default).  The random test drives them with one
sequence of spawn/fork/exit/switch, mmap (anonymous, shared, file, populated, and big
populated private mappings that exhaust memory until the OOM killer runs), munmap, mprotect,
madvise (DONTNEED zaps; DONTFORK ranges a later fork leaves out), mremap, brk, user reads
and writes, copies to and from user memory, page-allocation fault injection, the OOM
killer's calls (oom_score_adj writes with good and bad values, credentials, oom_score, the
reaper), and the machine-wide vm sysctls with overcommit pressure (OVERCOMMIT_NEVER and
large unpopulated private mappings that the one commit count refuses).  The hand cases pin
the paths the fast kernel does differently: fork and exit of a large process, failure in the
middle of a fork, a non-FastPageTables table part (the contract-only PTE path), an OOM kill
and reap, and the machine-wide commit count.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fastmodel.kernel import FastKernel, build
from fastmodel.kernel_ptes import RowPtes, WalkedPtes
from refmodel.buddy import RefBuddy
from refmodel.kernel import RefKernel
from refmodel.pagetable import RefPageTables
from refmodel.tlb import RefTlb
from refmodel.vma import RefAddressSpace
from specs.buddy import Capability as BuddyCapability
from specs.errno import Errno
from specs.kernel import SIGKILL, Capability, FaultResult, PageKind, RssMember
from specs.machine import MachineConfig, preset
from specs.vma import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_LOCKED,
    MAP_NONBLOCK,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
#: a window fixed mappings land in, so that calls overlap each other's mappings; it straddles
#: a 2 MiB boundary, so ranges span two PTE tables
WINDOW = 0x4020_0000 - 20 * PAGE
WINDOW_PAGES = 48
#: populated mapping sizes in pages: small ones make RSS differ, big ones exhaust tiny
HOG_PAGES = (8, 64, 512, 1536, 2560)
#: oom_score_adj writes: the limits, just outside them (-EINVAL), and ordinary values
ADJ_VALUES = (250, 1000, -500, -1000, 1, -999, 0, 1001, -1001)
#: vm sysctl writes: good values and ones 4.6 refuses (-EINVAL), one unknown name
SYSCTLS = (("overcommit_memory", 2), ("overcommit_memory", 0), ("overcommit_memory", 1),
           ("overcommit_memory", 3), ("overcommit_ratio", 50), ("overcommit_ratio", 10),
           ("overcommit_kbytes", 4096), ("overcommit_ratio", -1), ("max_map_count", 70),
           ("no_such_sysctl", 1))
#: unpopulated private writable mappings under OVERCOMMIT_NEVER: charged, nothing allocated
COMMIT_PAGES = (300, 900, 1500)
REF_PARTS = {"buddy": RefBuddy, "pagetable": RefPageTables, "tlb": RefTlb,
             "vma": RefAddressSpace}


class Pair:
    """The two kernels, called together and compared after every call."""

    def __init__(self, config: MachineConfig, parts: dict[str, Any] | None = None,
                 oom: bool = True) -> None:
        self.ref = RefKernel(config, parts, oom=oom)
        self.fast = FastKernel(config, parts, oom=oom)
        self.calls: list[str] = []
        self.compare("boot")

    def __call__(self, op: str, *args: Any) -> Any:
        self.calls.append(f"{op}{args!r:.120}")
        expected = getattr(self.ref, op)(*args)
        got = getattr(self.fast, op)(*args)
        assert expected == got, f"{op}{args}: fast {got!r:.300} != ref {expected!r:.300}"
        self.compare(op)
        return expected

    def compare(self, op: str) -> None:
        ref, fast = self.ref, self.fast
        where = f"after {op} (calls: {self.calls[-12:]})"
        view = ref.view()
        assert view == fast.view(), where
        assert ref.tables.view() == fast.tables.view(), f"page tables {where}"
        assert ref.tlb.view() == fast.tlb.view(), f"TLBs {where}"
        assert ref.pages.view() == fast.pages.view(), f"page allocator {where}"
        for proc in view.processes:
            assert ref.space(proc.pid).view() == fast.space(proc.pid).view(), where
        for pfn in [view.zero_pfn, *(page.pfn for page in view.pages)]:
            assert ref.page_contents(pfn) == fast.page_contents(pfn), f"pfn {pfn} {where}"
        for inode in view.inodes:
            assert ref.file_contents(inode.ident, 0, inode.size) == \
                fast.file_contents(inode.ident, 0, inode.size), f"inode {inode.ident} {where}"


# -- the random sequence ----------------------------------------------------------------------


def pids(pair: Pair) -> list[int]:
    return sorted(p.pid for p in pair.ref.view().processes)


def address(draw: Any, pair: Pair, pid: int) -> int:
    """Somewhere in or around one of pid's VMAs, or in the fixed window."""
    vmas = pair.ref.space(pid).view().vmas if pid in pair.ref.procs else ()
    if vmas and draw(st.booleans()):
        vma = vmas[draw(st.integers(0, len(vmas) - 1))]
        pages = (vma.end - vma.start) // PAGE
        page: int = draw(st.integers(-1, pages))
        return int(vma.start + page * PAGE + int(draw(st.integers(0, 64))))
    slot: int = draw(st.integers(0, WINDOW_PAGES))
    return WINDOW + slot * PAGE + int(draw(st.integers(0, 64)))


def runner_cpu(draw: Any, pair: Pair, cpu: int) -> tuple[int, int]:
    """Mostly a CPU running a process (an idle one answers -EINVAL), and that process."""
    running = pair.ref.view().running
    busy = [c for c, pid in enumerate(running) if pid > 0]
    if busy and draw(st.integers(0, 9)):
        cpu = draw(st.sampled_from(busy))
    return cpu, running[cpu]


def step(draw: Any, pair: Pair, n: int) -> None:
    live = pids(pair)
    pid = draw(st.sampled_from(live)) if live else 99
    op = draw(st.sampled_from(
        ["spawn", "fork", "exit", "switch", "switch", "mmap", "mmap", "mmap", "munmap", "mprotect",
         "mremap", "brk", "open_file", "read", "write", "write", "write", "copy_from_user",
         "copy_to_user", "fail_page_alloc", "hog", "hog", "set_oom_score_adj", "set_credentials",
         "oom_score", "oom_reap", "oom_reap", "set_sysctl", "commit", "commit", "madvise",
         "madvise"]))
    cpu = draw(st.integers(0, pair.ref.config.nr_cpus - 1))
    if op == "spawn":
        pair("spawn")
    elif op == "fork":
        pair("fork", pid)
    elif op == "exit":
        pair("exit", pid)
    elif op == "switch":
        pair("switch", cpu, draw(st.sampled_from([pid, -1])))
    elif op == "open_file":
        size = draw(st.integers(0, 6 * PAGE))
        pair("open_file", pid, size, 2, bytes([n % 250 + 1]) * min(size, 100))
    elif op == "mmap":
        kind = draw(st.sampled_from(["anon", "shared", "file", "shared file"]))
        flags = {"anon": ANON, "shared": MAP_SHARED | MAP_ANONYMOUS, "file": MAP_PRIVATE,
                 "shared file": MAP_SHARED}[kind]
        fd = -1 if "file" not in kind else draw(st.integers(3, 4))
        fixed = draw(st.booleans())
        addr = WINDOW + draw(st.integers(0, WINDOW_PAGES)) * PAGE if fixed else 0
        prot = draw(st.sampled_from([RW, RW, PROT_READ, PROT_NONE, RW | PROT_EXEC]))
        # MAP_POPULATE and MAP_LOCKED prefault (mm_populate) when the reference does
        extra = draw(st.sampled_from([0, 0, 0, MAP_POPULATE, MAP_LOCKED,
                                      MAP_POPULATE | MAP_NONBLOCK]))
        pair("mmap", pid, addr, draw(st.integers(1, 12)) * PAGE, prot,
             flags | extra | (MAP_FIXED if fixed else 0), fd, draw(st.integers(0, 2)) * PAGE)
    elif op == "munmap":
        pair("munmap", pid, address(draw, pair, pid) & ~(PAGE - 1),
             draw(st.integers(1, 10)) * PAGE)
    elif op == "mprotect":
        pair("mprotect", pid, address(draw, pair, pid) & ~(PAGE - 1),
             draw(st.integers(1, 10)) * PAGE,
             draw(st.sampled_from([RW, PROT_READ, PROT_NONE, PROT_READ | PROT_EXEC])))
    elif op == "madvise":
        pair("madvise", pid, address(draw, pair, pid) & ~(PAGE - 1),
             draw(st.integers(0, 10)) * PAGE,
             draw(st.sampled_from([MADV_DONTNEED, MADV_DONTNEED, MADV_DONTFORK, MADV_DOFORK])))
    elif op == "mremap":
        old = address(draw, pair, pid) & ~(PAGE - 1)
        flags = draw(st.sampled_from([0, MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED]))
        new = WINDOW + draw(st.integers(0, WINDOW_PAGES)) * PAGE
        pair("mremap", pid, old, draw(st.integers(1, 6)) * PAGE,
             draw(st.integers(1, 12)) * PAGE, flags, new)
    elif op == "brk":
        view = pair.ref.space(pid).view() if pid in pair.ref.procs else None
        base = view.brk if view is not None else 0
        pair("brk", pid, base + draw(st.integers(-3, 6)) * PAGE)
    elif op in ("read", "copy_from_user"):
        cpu, runner = runner_cpu(draw, pair, cpu)
        pair(op, cpu, address(draw, pair, runner), draw(st.integers(0, 2 * PAGE + 10)))
    elif op in ("write", "copy_to_user"):
        cpu, runner = runner_cpu(draw, pair, cpu)
        length = draw(st.integers(1, 2 * PAGE + 10))
        pair(op, cpu, address(draw, pair, runner), bytes([(n * 7) % 251 + 1]) * length)
    elif op == "fail_page_alloc":
        pair("fail_page_alloc", draw(st.sampled_from([0, 0, 1, 2, -1])),
             draw(st.integers(0, 8)))
    elif op == "hog":
        # a populated private mapping: big ones exhaust tiny's 16 MiB, and the OOM killer
        # runs inside the populate (or in a later fault)
        pair("mmap", pid, 0, draw(st.sampled_from(HOG_PAGES)) * PAGE, RW, ANON | MAP_POPULATE)
    elif op == "set_oom_score_adj":
        pair("set_oom_score_adj", pid, draw(st.sampled_from(ADJ_VALUES)))
    elif op == "set_credentials":
        pair("set_credentials", pid, draw(st.booleans()), draw(st.booleans()))
    elif op == "oom_score":
        pair("oom_score", draw(st.sampled_from([pid, 99])))
    elif op == "set_sysctl":
        pair("set_sysctl", *draw(st.sampled_from(SYSCTLS)))
    elif op == "commit":
        # overcommit pressure: NEVER, then a charge the one machine-wide count may refuse
        pair("set_sysctl", "overcommit_memory", 2)
        pair("mmap", pid, 0, draw(st.sampled_from(COMMIT_PAGES)) * PAGE, RW, ANON)
    else:
        pair("oom_reap")


class UncountedBuddy(RefBuddy):
    """A page allocator without get_page/put_page (no Capability.REFCOUNT): the kernel frees
    a user page itself when its last reference goes."""

    def __init__(self, config: MachineConfig) -> None:
        super().__init__(config)
        self.capabilities = self.capabilities - {BuddyCapability.REFCOUNT}


#: the fast kernel's own parts; contract-only page tables (the walked PTE path); a page
#: allocator the kernel frees pages on itself.  Both kernels get the same parts.
PARTS: dict[str, dict[str, Any] | None] = {
    "default": None, "walked tables": {"pagetable": RefPageTables},
    "uncounted buddy": {"buddy": UncountedBuddy}}


#: the fast kernel's own parts with memory nearly full from the start (a child holding 3000
#: populated pages), so most sequences run the OOM killer and the reaper
PRESSURE: dict[str, dict[str, Any] | None] = {**PARTS, "under pressure": None}


@pytest.mark.parametrize("parts", list(PRESSURE))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_calls_agree_with_the_reference_kernel(parts: str, data: st.DataObject) -> None:
    pair = Pair(preset("tiny"), PRESSURE[parts])
    first = pair("spawn")
    pair("switch", 0, first)
    pair("mmap", first, WINDOW, 8 * PAGE, RW, ANON | MAP_FIXED)
    child = pair("fork", first)  # init is never an OOM victim: pressure needs someone to kill
    if parts == "under pressure":
        pair("mmap", child, 0, 3000 * PAGE, RW, ANON | MAP_POPULATE)
    for n in range(data.draw(st.integers(5, 60), label="steps")):
        step(data.draw, pair, n)
    view = pair.fast.view()
    assert view.oom is not None
    event(f"OOM killer ran: {bool(view.oom.events)}")
    event(f"a victim was reaped: {any(p.oom and p.oom.reaped for p in view.processes)}")
    pair("fail_page_alloc", 0)
    for pid in pids(pair):
        pair("exit", pid)


# -- hand cases -------------------------------------------------------------------------------


def big_process(pair: Pair, pages: int) -> tuple[int, int]:
    """A running process with ``pages`` written anonymous pages and a written shared
    mapping; (pid, address of the anonymous mapping)."""
    pid = pair("spawn")
    pair("switch", 0, pid)
    addr = pair("mmap", pid, 0, pages * PAGE, RW, ANON)
    for i in range(pages):
        pair.ref.write(0, addr + i * PAGE, bytes([i % 255 + 1]))
        pair.fast.write(0, addr + i * PAGE, bytes([i % 255 + 1]))
    shared = pair("mmap", pid, 0, 4 * PAGE, RW, MAP_SHARED | MAP_ANONYMOUS)
    pair("write", 0, shared, b"shared")
    pair("read", 0, addr - 64 * PAGE, 1)  # a fault outside: SIGSEGV in both
    pair.compare("the writes")
    return pid, addr


def test_fork_and_exit_of_a_big_process_agree() -> None:
    pair = Pair(preset("small"))
    pid, addr = big_process(pair, 2048)
    child = pair("fork", pid)
    assert child > pid
    pair("switch", 1, child)
    pair("write", 1, addr + 5 * PAGE, b"child")  # COW break
    pair("write", 0, addr + 5 * PAGE, b"parent")  # the parent's page now has mapcount 1
    assert pair("read", 1, addr + 5 * PAGE, 5) == b"child"
    assert pair.fast.view().by_pid[child].rss[RssMember.MM_ANONPAGES] == 2048
    pair("exit", pid)
    pair("exit", child)


def free_pages(kernel: FastKernel) -> int:
    return sum(end - start for start, end in kernel.pages.view().free_spans)


def test_exit_returns_every_page() -> None:
    """Only the shmem object's page-cache page outlives the processes (shmem objects keep
    their pages, a documented departure); every other page and table is free again."""
    pair = Pair(preset("small"))
    fast = pair.fast
    free_at_boot = free_pages(fast)
    pid, _ = big_process(pair, 700)
    child = pair("fork", pid)
    assert free_pages(fast) < free_at_boot - 700
    pair("exit", pid)
    pair("exit", child)
    left = fast.view().pages
    assert [(PageKind.SHMEM, 1, 0, True)] == [
        (page.kind, page.refcount, page.mapcount, page.cached) for page in left]
    assert () == fast.tables.view().tables
    assert free_at_boot - 1 == free_pages(fast)
    assert int(fast.frames.mapcount.sum()) == 0
    assert set(fast.frames.data) <= {left[0].pfn}


@pytest.mark.parametrize("space", [0, 1, 2, 3, 5, 40])
def test_fork_failing_midway_agrees_and_leaks_nothing(space: int) -> None:
    pair = Pair(preset("small"))
    pid, addr = big_process(pair, 1100)  # three PTE tables
    before = pair.fast.pages.view()
    pair("fail_page_alloc", 1, space)
    child = pair("fork", pid)
    if child < 0:
        assert child == -Errno.ENOMEM
        assert before.free_spans == pair.fast.pages.view().free_spans
    pair("write", 0, addr, b"after")
    if child > 0:
        pair("exit", child)
    pair("exit", pid)


def test_fault_failing_agrees() -> None:
    pair = Pair(preset("tiny"))
    pid = pair("spawn")
    pair("switch", 0, pid)
    addr = pair("mmap", pid, 0, 40 * PAGE, RW, ANON)
    pair("fail_page_alloc", 2, 3)
    for i in range(8):
        result = pair("write", 0, addr + i * 600 * 7, b"x")
        assert isinstance(result, int | FaultResult)
    pair("exit", pid)


def test_running_out_of_memory_agrees() -> None:
    """Genuine allocation failures (no injection): write faults end in VM_FAULT_OOM, fork
    fails, and exit gives everything back, the same way in both."""
    pair = Pair(preset("tiny"))
    pid = pair("spawn")
    pair("switch", 0, pid)
    # two mappings: one larger than memory would be refused by overcommit's heuristic
    first, second = (pair("mmap", pid, 0, 2500 * PAGE, RW, ANON) for _ in range(2))
    assert first > 0
    assert second > 0
    places = [base + i * PAGE for base in (second, first) for i in range(2500)]
    results = [pair.fast.write(0, addr, b"m") for addr in places]
    assert results == [pair.ref.write(0, addr, b"m") for addr in places]
    pair.compare("filling memory")
    assert any(isinstance(r, FaultResult) and r.signal == 0 for r in results)
    pair("fork", pid)
    pair("write", 0, first, b"again")
    for child in pids(pair):
        pair("exit", child)


def test_contract_only_tables_take_the_walked_path() -> None:
    fast = FastKernel(preset("tiny"), {"pagetable": RefPageTables})
    assert isinstance(fast.ranges, WalkedPtes)
    assert isinstance(FastKernel(preset("tiny")).ranges, RowPtes)
    pair = Pair(preset("small"), {"pagetable": RefPageTables})
    pid, addr = big_process(pair, 600)
    child = pair("fork", pid)
    pair("switch", 1, child)
    pair("write", 1, addr, b"c")
    pair("mremap", pid, addr, 8 * PAGE, 8 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, WINDOW)
    pair("munmap", child, addr, 300 * PAGE)
    pair("exit", child)
    pair("exit", pid)


def test_capabilities() -> None:
    config = preset("tiny")
    assert Capability.EXACT in build(config).capabilities
    assert {Capability.FORK, Capability.FAIL_PAGE_ALLOC, Capability.OOM} <= \
        build(config).capabilities
    swapped = build(config, {"tlb": RefTlb})
    assert Capability.EXACT not in swapped.capabilities
    assert build(config, REF_PARTS).capabilities == RefKernel(config, REF_PARTS).capabilities
    assert Capability.OOM not in FastKernel(config, oom=False).capabilities
    assert Capability.OVERCOMMIT in build(config).capabilities
    assert build(config).fail_page_alloc(-2) == -Errno.EINVAL


def test_without_the_oom_killer_its_calls_answer_enosys() -> None:
    """oom=False on both sides: no Capability.OOM, -ENOSYS from the four calls, no OOM
    state in the views, and running out of memory only fails the access."""
    pair = Pair(preset("tiny"), oom=False)
    pid = pair("spawn")
    assert Capability.OOM not in pair.fast.capabilities
    for call, args in (("set_oom_score_adj", (pid, 5)), ("set_credentials", (pid, True, True)),
                       ("oom_score", (pid,)), ("oom_reap", ())):
        assert pair(call, *args) == -Errno.ENOSYS
    pair("mmap", pid, 0, 2500 * PAGE, RW, ANON | MAP_POPULATE)
    pair("mmap", pid, 0, 2500 * PAGE, RW, ANON | MAP_POPULATE)
    view = pair.fast.view()
    assert view.oom is None
    assert view.by_pid[pid].oom is None


def oom_tree(pair: Pair) -> tuple[int, int, int]:
    """init (never a victim) running on CPU 0 with two children: (init, small, hog)."""
    init = pair("spawn")
    pair("switch", 0, init)
    small, hog = pair("fork", init), pair("fork", init)
    assert (small, hog) == (init + 1, init + 2)
    pair("mmap", small, 0, 1024 * PAGE, RW, ANON | MAP_POPULATE)
    return init, small, hog


@pytest.mark.parametrize("hog_adj", [0, -1000])
def test_exhaustion_kills_the_right_process_and_the_reaper_returns_its_pages(
        hog_adj: int) -> None:
    """A populate that exhausts memory runs the OOM killer as the hog (current): the hog
    dies, unless its oom_score_adj of -1000 exempts it, and then the small process does.
    The victim gets SIGKILL and TIF_MEMDIE and waits in the reaper's queue; its calls
    answer -EINTR or SIGKILL; the reaper takes its private pages back, the same in both
    kernels."""
    pair = Pair(preset("tiny"))
    fast = pair.fast
    init, small, hog = oom_tree(pair)
    assert pair("set_credentials", hog, False, True) == 0
    assert pair("set_oom_score_adj", hog, hog_adj) == 0
    assert pair("set_oom_score_adj", small, -1001) == -Errno.EINVAL
    assert pair("oom_score", small) > pair("oom_score", hog)  # small holds 1024 pages
    pair("mmap", hog, 0, 3500 * PAGE, RW, ANON | MAP_POPULATE)
    view = fast.view()
    assert view.oom is not None
    event = view.oom.events[0]
    assert (event.trigger, event.ctx.current) == ("alloc", (hog, hog))
    assert [task.pid for task in event.tasks] == [init, small, hog]
    assert event.tasks[0].children == (small, hog)
    victim = small if hog_adj else hog
    assert event.result.kill is not None
    assert event.result.kill.victim == (victim, victim)
    state = view.by_pid[victim].oom
    assert state is not None
    assert (state.sigkill, state.memdie, state.reaped) == (True, True, False)
    assert view.oom.reap_queue == (victim,)
    assert [p.pid for p in view.processes if p.oom is not None and p.oom.sigkill] == [victim]
    if victim == hog:
        # the populate stopped at the kill: the hog holds less than it asked for
        assert view.by_pid[hog].rss[RssMember.MM_ANONPAGES] < 3500
    assert pair("mmap", victim, 0, PAGE, RW, ANON) == -Errno.EINTR
    assert pair("fork", victim) == -Errno.EINTR
    pair("switch", 1, victim)
    killed = pair("write", 1, 0x1000, b"x")
    assert isinstance(killed, FaultResult)
    assert killed.signal == SIGKILL
    anon = view.by_pid[victim].rss[RssMember.MM_ANONPAGES]
    free = free_pages(fast)
    assert anon > 1000
    assert pair("oom_reap") == victim
    assert pair("oom_reap") == 0
    after = fast.view()
    reaped = after.by_pid[victim]
    assert reaped.rss[RssMember.MM_ANONPAGES] == 0
    assert reaped.oom is not None
    assert (reaped.oom.memdie, reaped.oom.reaped, reaped.oom.oom_score_adj) == \
        (False, True, -1000)
    assert free_pages(fast) >= free + anon
    assert after.oom is not None
    assert after.oom.reap_queue == ()
    for pid in (victim, init):
        pair("exit", pid)


def test_fork_inherits_the_adjustment_and_credentials_but_no_kill() -> None:
    pair = Pair(preset("tiny"))
    init, small, _ = oom_tree(pair)
    pair("set_credentials", small, True, True)
    assert pair("set_oom_score_adj", small, -500) == 0
    grandchild = pair("fork", small)
    state = pair.fast.view().by_pid[grandchild].oom
    assert state is not None
    assert (state.oom_score_adj, state.oom_score_adj_min, state.cap_sys_admin,
            state.cap_sys_resource, state.sigkill) == (-500, -500, True, True, False)
    assert pair("set_oom_score_adj", init, 1001) == -Errno.EINVAL
    assert pair("oom_score", 99) == -Errno.ESRCH


def test_a_failed_fault_runs_pagefault_out_of_memory() -> None:
    """An injected failure makes a write fault end in VM_FAULT_OOM: the injected allocation
    itself calls no OOM killer, the fault's pagefault_out_of_memory does."""
    pair = Pair(preset("tiny"))
    _, small, hog = oom_tree(pair)
    pair("switch", 1, hog)
    addr = pair("mmap", hog, 0, 8 * PAGE, RW, ANON)
    pair("fail_page_alloc", 1)
    failed = pair("write", 1, addr, b"x")
    assert isinstance(failed, FaultResult)
    view = pair.fast.view()
    assert view.oom is not None
    assert [event.trigger for event in view.oom.events] == ["pagefault"]
    kill = view.oom.events[0].result.kill
    assert kill is not None
    assert kill.victim == (small, small)  # the bigger of the two; init is exempt
    assert pair("write", 1, addr, b"y") == 1


def test_one_commit_count_for_the_machine_agrees() -> None:
    """Under OVERCOMMIT_NEVER two processes are held to one limit together; fork, exit and a
    spawn refused its stack move the one count the same way in both kernels."""
    pair = Pair(preset("tiny"))
    first, second = pair("spawn"), pair("spawn")
    assert pair("set_sysctl", "overcommit_memory", 2) == 0
    assert pair("mmap", first, 0, 1000 * PAGE, RW, ANON) > 0
    assert pair("mmap", second, 0, 900 * PAGE, RW, ANON) == -Errno.ENOMEM
    assert pair("fork", first) == -Errno.ENOMEM
    child = pair("fork", second)
    assert child > 0
    assert pair.fast.view().committed == 1099
    pair("exit", first)
    assert pair("set_sysctl", "overcommit_ratio", 0) == 0
    assert pair("spawn") == -Errno.ENOMEM
    assert pair.fast.view().committed == 66
    pair("exit", child)
    pair("exit", second)
    assert pair.fast.view().committed == 0
