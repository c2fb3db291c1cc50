"""The running kernel as an oracle for faults, fork and COW (issue 5, item 4).

Each scenario runs twice: on the host, in a forked child that reads its own (and its forked
peer's) ``/proc/<pid>/pagemap``, and on ``refmodel.kernel.RefKernel``.  Pfns differ between
the two, so both sides are reduced to the same observation: per page ``-`` (not present),
``Z`` (the zero page) or a label naming the page by first appearance (``P0``, ``P1``...),
with the pagemap "exclusively mapped" bit (the model's mapcount == 1), plus the bytes read.
The differences between 4.6 and the host that could show here are masked as
``specs/fault_oracle.md`` describes (small mappings with MADV_NOHUGEPAGE, no KSM, root).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest

from refmodel.kernel import RefKernel
from specs import pte as pt
from specs.machine import preset
from specs.pagetable import Level
from specs.vma import VM_READ, VM_SHARED, VM_WRITE
from stateful_tests.oracle.pagemap import (
    MADV_DONTFORK,
    MADV_DONTNEED,
    PAGE_SIZE,
    WINDOW_BASE,
    PagemapEntry,
    Peer,
    madvise,
    map_anon,
    own_maps,
    peek,
    pfns_visible,
    poke,
    read_pagemap,
    run_in_child,
)

pytestmark = pytest.mark.oracle

if not pfns_visible():  # pragma: no cover - only without CAP_SYS_ADMIN or without fork
    pytest.skip("pagemap hides pfns from this process (needs CAP_SYS_ADMIN)",
                allow_module_level=True)

P = PAGE_SIZE
PRIV, SHARED = 0, 1
#: (base, page count, shared) of the mappings every scenario uses
A = WINDOW_BASE
B = WINDOW_BASE + 16 * P
C = WINDOW_BASE + 32 * P
ZPROBE = WINDOW_BASE + 64 * P
MAP_SHARED_ANON, MAP_PRIVATE_ANON_FIXED = 0x31, 0x32

#: one observation: (page kind or label, exclusive) per page
Pages = list[tuple[str, bool]]


class Labeller:
    """Names pfns by order of first appearance, the zero page as Z."""

    def __init__(self, zero_pfn: int) -> None:
        self.zero_pfn = zero_pfn
        self.names: dict[int, str] = {}

    def __call__(self, pfn: int | None, exclusive: bool) -> tuple[str, bool]:
        if pfn is None:
            return ("-", exclusive)
        if pfn == self.zero_pfn:
            return ("Z", exclusive)
        return (self.names.setdefault(pfn, f"P{len(self.names)}"), exclusive)


# -- the two sides ---------------------------------------------------------------------------------


class HostSide:
    """Runs in the scenario child: this process is "parent", a Peer is "child"."""

    def __init__(self) -> None:
        map_anon(ZPROBE, 1, shared=False)
        peek(ZPROBE, 1)
        zero = read_pagemap(ZPROBE, 1)[0].pfn
        assert zero, "a read fault did not map a page"
        self.label = Labeller(zero)
        self.peer: Peer | None = None

    def map(self, addr: int, pages: int, shared: bool) -> None:
        map_anon(addr, pages, shared)

    def fork(self) -> None:
        self.peer = Peer()

    def read(self, who: str, addr: int, n: int) -> str:
        if who == "parent":
            return peek(addr, n).hex()
        assert self.peer is not None
        return self.peer.peek(addr, n).hex()

    def write(self, who: str, addr: int, data: bytes) -> None:
        if who == "parent":
            poke(addr, data)
        else:
            assert self.peer is not None
            self.peer.poke(addr, data)

    def pages(self, who: str, addr: int, n: int) -> Pages:
        entries: tuple[PagemapEntry, ...]
        if who == "parent":
            entries = read_pagemap(addr, n)
        else:
            assert self.peer is not None
            entries = self.peer.pagemap(addr, n)
        return [self.label(e.pfn, e.exclusive) for e in entries]

    def madvise(self, addr: int, pages: int, advice: int) -> None:
        madvise(addr, pages, advice)

    def maps(self, who: str, start: int, end: int) -> list[tuple[int, int, str]]:
        if who == "parent":
            return own_maps(start, end)
        assert self.peer is not None
        return self.peer.maps(start, end)

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()


class ModelSide:
    """The same operations on RefKernel: "parent" runs on CPU 0, "child" on CPU 1."""

    def __init__(self, kernel: type[RefKernel] = RefKernel) -> None:
        self.k = kernel(preset("small"))
        self.pid = {"parent": self.k.spawn()}
        self.cpu = {"parent": 0, "child": 1}
        assert self.k.switch(0, self.pid["parent"]) == 0
        self.label = Labeller(self.k.view().zero_pfn)

    def map(self, addr: int, pages: int, shared: bool) -> None:
        flags = MAP_SHARED_ANON if shared else MAP_PRIVATE_ANON_FIXED
        assert self.k.mmap(self.pid["parent"], addr, pages * P, 3, flags) == addr

    def fork(self) -> None:
        child = self.k.fork(self.pid["parent"])
        assert child > 0
        self.pid["child"] = child
        assert self.k.switch(1, child) == 0

    def read(self, who: str, addr: int, n: int) -> str:
        got = self.k.read(self.cpu[who], addr, n)
        assert isinstance(got, bytes), got
        return got.hex()

    def write(self, who: str, addr: int, data: bytes) -> None:
        assert self.k.write(self.cpu[who], addr, data) == len(data)

    def pages(self, who: str, addr: int, n: int) -> Pages:
        view = self.k.view()
        mm = view.by_pid[self.pid[who]].mm
        out = []
        for i in range(n):
            level, entry = self.k.tables.walk(mm, addr + i * P)
            if level != Level.PTE or not pt.pte_present(entry):
                out.append(self.label(None, False))
                continue
            page = view.by_pfn.get(pt.pte_pfn(entry))
            out.append(self.label(pt.pte_pfn(entry), page is not None and page.mapcount == 1))
        return out

    def madvise(self, addr: int, pages: int, advice: int) -> None:
        assert self.k.madvise(self.pid["parent"], addr, pages * P, advice) == 0

    def maps(self, who: str, start: int, end: int) -> list[tuple[int, int, str]]:
        out = []
        for vma in self.k.space(self.pid[who]).view().vmas:
            if vma.start < end and vma.end > start:
                perms = ("r" if vma.flags & VM_READ else "-") + ("w" if vma.flags & VM_WRITE
                                                                 else "-")
                perms += "-" + ("s" if vma.flags & VM_SHARED else "p")
                out.append((vma.start, vma.end, perms))
        return out

    def close(self) -> None:
        pass


Side = HostSide | ModelSide
Scenario = Callable[[Side], dict[str, Any]]


def on_both(scenario: Scenario, kernel: type[RefKernel] = RefKernel,
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(host, model) observations; a host crash or error fails with the child's report."""

    def host() -> dict[str, Any]:
        side = HostSide()
        try:
            return scenario(side)
        finally:
            side.close()

    result = run_in_child(host, timeout=5.0)
    assert result.status == "ok", f"host scenario {result.status}: {result.message}"
    model = ModelSide(kernel)
    # JSON turns the host's tuples into lists; do the same to the model's
    return _lists(result.value), _lists(scenario(model))


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(item) for item in value]
    return value


# -- the scenarios -----------------------------------------------------------------------------


def untouched(s: Side) -> dict[str, Any]:
    s.map(A, 4, shared=False)
    s.map(B, 4, shared=True)
    return {"private": s.pages("parent", A, 4), "shared": s.pages("parent", B, 4)}


def read_faults(s: Side) -> dict[str, Any]:
    s.map(A, 4, shared=False)
    data = s.read("parent", A, 4 * P)
    return {"bytes": data == "00" * 4 * P, "pages": s.pages("parent", A, 4)}


def write_faults(s: Side) -> dict[str, Any]:
    s.map(A, 4, shared=False)
    s.read("parent", A, 2 * P)          # pages 0 and 1 map the zero page first
    s.write("parent", A + P + 5, b"x")  # ... then page 1 is written: zero page -> new page
    s.write("parent", A + 3 * P, b"y")  # a never-touched page written directly
    return {"pages": s.pages("parent", A, 4),
            "bytes": [s.read("parent", A + P + 4, 2), s.read("parent", A + 3 * P, 1)]}


def cow_after_fork(s: Side) -> dict[str, Any]:
    s.map(A, 3, shared=False)
    s.write("parent", A, b"A")
    s.write("parent", A + P, b"B")
    s.read("parent", A + 2 * P, 1)
    s.fork()
    out: dict[str, Any] = {"forked": [s.pages("parent", A, 3), s.pages("child", A, 3)]}
    s.write("child", A, b"c")           # the child breaks COW on page 0
    out["child_wrote"] = [s.pages("parent", A, 3), s.pages("child", A, 3),
                          s.read("parent", A, 1), s.read("child", A, 1)]
    s.write("parent", A + P, b"b")      # the parent breaks COW on page 1
    out["parent_wrote"] = [s.pages("parent", A, 3), s.pages("child", A, 3),
                           s.read("parent", A + P, 1), s.read("child", A + P, 1)]
    s.write("parent", A, b"a")          # page 0 is the parent's alone again: reused
    s.write("child", A + 2 * P, b"z")   # the zero page is never written: a new page
    out["after"] = [s.pages("parent", A, 3), s.pages("child", A, 3),
                    s.read("parent", A, 3 * P)[::2 * P], s.read("child", A, 3 * P)[::2 * P]]
    return out


def shared_after_fork(s: Side) -> dict[str, Any]:
    s.map(B, 2, shared=True)
    s.write("parent", B, b"S")
    s.fork()
    out: dict[str, Any] = {"forked": [s.pages("parent", B, 2), s.pages("child", B, 2)]}
    out["child_reads"] = s.read("child", B, 1)
    s.write("child", B + P, b"T")
    out["parent_reads"] = s.read("parent", B + P, 1)
    s.write("parent", B, b"U")
    out["child_rereads"] = s.read("child", B, 1)
    out["end"] = [s.pages("parent", B, 2), s.pages("child", B, 2)]
    return out


def what_fork_copies(s: Side) -> dict[str, Any]:
    s.map(A, 2, shared=False)           # written: has an anon_vma, PTEs copied
    s.map(B, 2, shared=False)           # read only: zero page, no anon_vma, PTEs skipped
    s.map(C, 2, shared=True)            # shared: refaulted from the page cache, skipped
    s.write("parent", A, b"w")
    s.read("parent", B, 1)
    s.write("parent", C, b"s")
    s.fork()
    end = C + 2 * P
    return {"maps": [s.maps("parent", A, end), s.maps("child", A, end)],
            "child": [s.pages("child", A, 2), s.pages("child", B, 2), s.pages("child", C, 2)]}


def dontfork(s: Side) -> dict[str, Any]:
    s.map(A, 2, shared=False)
    s.map(B, 3, shared=False)
    s.write("parent", A, b"a")
    for i in range(3):
        s.write("parent", B + i * P, b"b")
    s.madvise(B + P, 1, MADV_DONTFORK)  # the middle page: two splits in the parent
    s.fork()
    end = B + 3 * P
    return {"maps": [s.maps("parent", A, end), s.maps("child", A, end)],
            "child": [s.pages("child", A, 2), s.pages("child", B, 3)],
            "reads": [s.read("child", A, 1), s.read("child", B + 2 * P, 1)]}


def dontneed(s: Side) -> dict[str, Any]:
    s.map(A, 2, shared=False)
    s.map(B, 2, shared=True)
    for base in (A, B):
        s.write("parent", base, b"x")
        s.write("parent", base + P, b"y")
    before = [s.pages("parent", A, 2), s.pages("parent", B, 2)]
    s.madvise(A, 1, MADV_DONTNEED)
    s.madvise(B, 2, MADV_DONTNEED)
    zapped = [s.pages("parent", A, 2), s.pages("parent", B, 2)]
    reads = [s.read("parent", A, 1), s.read("parent", A + P, 1), s.read("parent", B, 1),
             s.read("parent", B + P, 1)]
    return {"before": before, "zapped": zapped, "reads": reads,
            "after": [s.pages("parent", A, 2), s.pages("parent", B, 2)]}


def test_untouched_pages_are_not_present() -> None:
    host, model = on_both(untouched)
    assert host == model
    assert host["private"] == [["-", False]] * 4


def test_read_fault_maps_the_zero_page() -> None:
    host, model = on_both(read_faults)
    assert host == model
    assert host == {"bytes": True, "pages": [["Z", False]] * 4}


def test_write_fault_allocates_a_distinct_page() -> None:
    host, model = on_both(write_faults)
    assert host == model
    assert host["pages"] == [["Z", False], ["P0", True], ["-", False], ["P1", True]]
    assert host["bytes"] == ["0078", "79"]


def test_cow_separates_on_first_write_and_keeps_the_other_side() -> None:
    host, model = on_both(cow_after_fork)
    assert host == model
    assert host["forked"][0] == host["forked"][1] == [["P0", False], ["P1", False],
                                                      ["Z", False]]
    parent, child, mine, theirs = host["child_wrote"]
    assert child[0] == ["P2", True]
    assert parent[0] == ["P0", True]
    assert (mine, theirs) == ("41", "63")
    parent, child, mine, theirs = host["parent_wrote"]
    assert parent[1] == ["P3", True]
    assert child[1] == ["P1", True]
    assert (mine, theirs) == ("62", "42")


def test_shared_anonymous_stays_shared_after_fork() -> None:
    host, model = on_both(shared_after_fork)
    assert host == model
    assert host["forked"][1] == [["-", False]] * 2  # fork copied no PTEs of a shared VMA
    assert (host["child_reads"], host["parent_reads"], host["child_rereads"]) == \
        ("53", "54", "55")
    assert host["end"][0] == host["end"][1] == [["P0", False], ["P1", False]]


def test_which_vmas_and_ptes_fork_copies() -> None:
    host, model = on_both(what_fork_copies)
    assert host == model
    assert host["maps"][0] == host["maps"][1]
    assert host["child"] == [[["P0", False], ["-", False]], [["-", False]] * 2,
                             [["-", False]] * 2]


def test_dontfork_vma_is_not_copied() -> None:
    host, model = on_both(dontfork)
    assert host == model
    parent, child = host["maps"]
    assert [line[0] for line in parent] == [A, B, B + P, B + 2 * P]
    assert [line[0] for line in child] == [A, B, B + 2 * P]
    assert host["child"] == [[["P0", False], ["-", False]],
                             [["P1", False], ["-", False], ["P2", False]]]
    assert host["reads"] == ["61", "62"]


def test_dontneed_zaps_private_and_keeps_shared_contents() -> None:
    host, model = on_both(dontneed)
    assert host == model
    assert host["zapped"] == [[["-", False], ["P1", True]], [["-", False]] * 2]
    assert host["reads"] == ["00", "79", "78", "79"]
    # the private page refaults as the zero page; the shared ones come back from the cache
    assert host["after"] == [[["Z", False], ["P1", True]], host["before"][1]]


def test_a_crashing_scenario_is_reported() -> None:
    result = run_in_child(lambda: peek(WINDOW_BASE + 128 * P, 1))
    assert result.status == "crashed"
    assert "SIGSEGV" in result.message


@pytest.mark.parametrize("name", ["CowReusesSharedAnonPage", "ForkSkipsGetPage",
                                  "ForkLeavesParentWritable"])
def test_the_comparison_catches_a_broken_cow(name: str) -> None:
    # imported by name: tests/mutants/__init__.py does not pass mypy --strict on its own
    kernel: type[RefKernel] = getattr(importlib.import_module("tests.mutants.fault"), name)
    host, model = on_both(cow_after_fork, kernel)
    assert host != model
