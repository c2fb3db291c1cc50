"""fastmodel's composed kernel against the reference kernel: the same calls give the same
results, and after every call every view (kernel, page tables, TLBs, page allocator, each
address space) and every page's and file's contents are equal.

The random test drives both kernels with one sequence of spawn/fork/exit/switch, mmap
(anonymous, shared, file), munmap, mprotect, mremap, brk, user reads and writes, copies to
and from user memory and page-allocation fault injection.  The hand cases pin the paths the
fast kernel does differently: fork and exit of a large process, failure in the middle of a
fork, and a non-FastPageTables table part (the contract-only PTE path).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
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
from specs.kernel import Capability, FaultResult, PageKind, RssMember
from specs.machine import MachineConfig, preset
from specs.vma import (
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
REF_PARTS = {"buddy": RefBuddy, "pagetable": RefPageTables, "tlb": RefTlb,
             "vma": RefAddressSpace}


def reference(config: MachineConfig, parts: dict[str, Any] | None = None) -> RefKernel:
    """The reference kernel without the OOM killer (FastKernel does not have it yet), on
    refmodel's parts or the given ones."""
    try:
        return RefKernel(config, parts, oom=False)
    except TypeError:  # a RefKernel from before the OOM killer
        return RefKernel(config, parts)


class Pair:
    """The two kernels, called together and compared after every call."""

    def __init__(self, config: MachineConfig, parts: dict[str, Any] | None = None) -> None:
        self.ref = reference(config, parts)
        self.fast = FastKernel(config, parts)
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
         "copy_to_user", "fail_page_alloc"]))
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
    else:
        pair("fail_page_alloc", draw(st.sampled_from([0, 0, 1, 2, -1])),
             draw(st.integers(0, 8)))


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


@pytest.mark.parametrize("parts", list(PARTS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_calls_agree_with_the_reference_kernel(parts: str, data: st.DataObject) -> None:
    pair = Pair(preset("tiny"), PARTS[parts])
    first = pair("spawn")
    pair("switch", 0, first)
    pair("mmap", first, WINDOW, 8 * PAGE, RW, ANON | MAP_FIXED)
    for n in range(data.draw(st.integers(5, 60), label="steps")):
        step(data.draw, pair, n)
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
    assert {Capability.FORK, Capability.FAIL_PAGE_ALLOC} <= build(config).capabilities
    swapped = build(config, {"tlb": RefTlb})
    assert Capability.EXACT not in swapped.capabilities
    assert build(config, REF_PARTS).capabilities == reference(config, REF_PARTS).capabilities
    assert build(config).fail_page_alloc(-2) == -Errno.EINVAL


def test_without_an_oom_killer_its_calls_answer_enosys() -> None:
    """FastKernel has no OOM killer yet: its calls answer as RefKernel(oom=False) does."""
    pair = Pair(preset("tiny"))
    pid = pair("spawn")
    assert "oom" not in {cap.value for cap in pair.fast.capabilities}
    for call, args in (("set_oom_score_adj", (pid, 5)), ("set_credentials", (pid, True, True)),
                       ("oom_score", (pid,)), ("oom_reap", ())):
        assert getattr(pair.fast, call)(*args) == -Errno.ENOSYS
        if hasattr(pair.ref, call):
            pair(call, *args)
