"""State invariants of the composed kernel, FAULT-I1 .. FAULT-I7 (``specs/fault.md``).

A snapshot holds the kernel's view, the views of the parts it is composed of (page tables,
TLBs, address spaces, page allocator), a way to read page and file contents, and the caller's
ledger of what each process wrote where.  The checks judge only what those views expose, so
they hold for any composition whatever pfns it picks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import attrs

from invariants.registry import Cost, state_invariant
from specs import pte as pt
from specs.buddy import BuddyView
from specs.kernel import RSS_OF, KernelView, RssMember
from specs.pagetable import Level, PageTableView
from specs.tlb import TlbView, grants_more
from specs.vma import VM_SHARED
from specs.vma import MmView as SpaceView

MAX_PROBLEMS = 8
PAGE_SIZE = pt.PAGE_SIZE


@attrs.define
class FaultLedger:
    """What the caller wrote, as the caller knows it: the bytes a process stored through a
    private mapping (its own, whatever any other process does) and the bytes stored through a
    shared mapping (the file's, seen by every sharer)."""

    #: pid -> {user address: byte}
    private: dict[int, dict[int, int]] = attrs.field(factory=dict)
    #: kernel inode -> {file offset: byte}
    shared: dict[int, dict[int, int]] = attrs.field(factory=dict)
    #: free pages in the allocator right after the kernel booted (the zero page taken)
    free_at_boot: int = 0

    def copy(self) -> FaultLedger:
        """A copy for the 'before' side of a step record."""
        return FaultLedger({p: dict(b) for p, b in self.private.items()},
                           {i: dict(b) for i, b in self.shared.items()}, self.free_at_boot)


@attrs.frozen
class FaultSnapshot:
    """The composed state after a step."""

    view: KernelView
    tables: PageTableView
    tlb: TlbView
    #: pid -> the process's address-space view
    spaces: Mapping[int, SpaceView]
    pages: BuddyView
    #: pfn -> its 4096 bytes
    page_contents: Callable[[int], bytes]
    #: (inode, offset, n) -> what read(2) of the file returns
    file_contents: Callable[[int, int, int], bytes]
    ledger: FaultLedger | None = None

    @functools.cached_property
    def ptes(self) -> dict[int, dict[int, int]]:
        """page-table mm id -> {user address: non-zero PTE}, from the table view."""
        out: dict[int, dict[int, int]] = {mm.id: {} for mm in self.tables.mms}
        for table in self.tables.tables:
            if table.level != Level.PTE:
                continue
            leaves = out.setdefault(table.mm, {})
            for index, value in table.entries:
                leaves[table.base + index * PAGE_SIZE] = value
        return out

    @functools.cached_property
    def contents(self) -> dict[int, bytes]:
        """A cache over ``page_contents`` for one check run."""
        return {}

    def byte_at(self, pfn: int, offset: int) -> int:
        """One byte of a physical page."""
        if pfn not in self.contents:
            self.contents[pfn] = self.page_contents(pfn)
        return self.contents[pfn][offset]


def capped(problems: list[str]) -> list[str]:
    """The first MAX_PROBLEMS problems and a count of the rest."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]


def present(entry: int) -> bool:
    """A PTE that maps a page: with no swap in the model, every non-zero PTE does, a
    PROT_NONE one (present bit clear, _PAGE_PROTNONE set) included."""
    return entry != 0


def mapped_pfns(snap: FaultSnapshot) -> dict[int, list[tuple[int, int, int]]]:
    """pfn -> (mm, address, PTE) of every PTE that maps it."""
    out: dict[int, list[tuple[int, int, int]]] = {}
    for mm, leaves in snap.ptes.items():
        for addr, entry in leaves.items():
            if present(entry):
                out.setdefault(pt.pte_pfn(entry), []).append((mm, addr, entry))
    return out


def _pid_of(snap: FaultSnapshot) -> dict[int, int]:
    return {proc.mm: proc.pid for proc in snap.view.processes}


@state_invariant("FAULT-I1", "a write is seen by its own mm, and by sharers only if shared",
                 needs_ledger=True, cost=Cost.PAGES)
def cow_isolation(snap: FaultSnapshot) -> list[str]:
    """Every byte a process stored through a private mapping still reads back in that
    process, whatever other processes stored at the same address since (a COW page reused
    or not write-protected at fork lets another process's store through); every byte stored
    through a shared mapping is in the file and in every sharer's mapped page."""
    ledger = snap.ledger
    if ledger is None:
        return []
    problems: list[str] = []
    for proc in snap.view.processes:
        leaves = snap.ptes.get(proc.mm, {})
        for addr, want in sorted(ledger.private.get(proc.pid, {}).items()):
            entry = leaves.get(addr & pt.PAGE_MASK, 0)
            if not present(entry):
                problems.append(f"pid {proc.pid} stored {want:#04x} at {addr:#x} through a "
                                f"private mapping, but no PTE maps that page now")
                continue
            got = snap.byte_at(pt.pte_pfn(entry), addr % PAGE_SIZE)
            if got != want:
                problems.append(f"pid {proc.pid} stored {want:#04x} at {addr:#x} through a "
                                f"private mapping but reads {got:#04x} there (pfn "
                                f"{pt.pte_pfn(entry):#x}, mapcount "
                                f"{_mapcount(snap, pt.pte_pfn(entry))}): another process's "
                                f"store reached it")
    for inode, written in sorted(ledger.shared.items()):
        size = next((n.size for n in snap.view.inodes if n.ident == inode), 0)
        for offset, want in sorted(written.items()):
            if offset < size:
                got_file = snap.file_contents(inode, offset, 1)
                if got_file != bytes([want]):
                    problems.append(f"{want:#04x} was stored at offset {offset:#x} of inode "
                                    f"{inode} through a shared mapping, but the file reads "
                                    f"{got_file!r} there")
    problems.extend(_sharers_see(snap, ledger))
    return capped(problems)


def _mapcount(snap: FaultSnapshot, pfn: int) -> int | str:
    page = snap.view.by_pfn.get(pfn)
    return page.mapcount if page is not None else "?"


def _sharers_see(snap: FaultSnapshot, ledger: FaultLedger) -> list[str]:
    """Every process mapping a shared-written file offset with a present PTE sees the byte."""
    problems = []
    for proc in snap.view.processes:
        files = dict(proc.files)
        space = snap.spaces.get(proc.pid)
        leaves = snap.ptes.get(proc.mm, {})
        for vma in space.vmas if space is not None else ():
            if vma.file is None or not vma.flags & VM_SHARED or vma.file not in files:
                continue
            written = ledger.shared.get(files[vma.file], {})
            low = vma.pgoff * PAGE_SIZE
            for offset, want in written.items():
                addr = vma.start + offset - low
                if not vma.start <= addr < vma.end:
                    continue
                entry = leaves.get(addr & pt.PAGE_MASK, 0)
                if present(entry) and snap.byte_at(pt.pte_pfn(entry), addr % PAGE_SIZE) != want:
                    problems.append(f"pid {proc.pid} maps offset {offset:#x} of inode "
                                    f"{files[vma.file]} shared at {addr:#x}, but does not see "
                                    f"the {want:#04x} stored there")
    return problems


@state_invariant("FAULT-I2", "refcount and mapcount equal the PTE and page-cache references")
def rmap_counts(snap: FaultSnapshot) -> list[str]:
    """page_mapcount is the number of PTEs mapping the page, across every mm; page_count is
    that plus one for the page cache.  A fork that maps without get_page, or a COW that
    drops the wrong page, shows here long before the page is freed under a user."""
    problems = []
    maps = mapped_pfns(snap)
    zero = snap.view.zero_pfn
    for page in snap.view.pages:
        ptes = len(maps.get(page.pfn, ()))
        want_ref = ptes + (1 if page.cached else 0)
        if page.mapcount != ptes or page.refcount != want_ref:
            problems.append(f"pfn {page.pfn:#x} ({page.kind.value}, index {page.index}) has "
                            f"mapcount {page.mapcount} and refcount {page.refcount}, but "
                            f"{ptes} PTEs map it{' and the page cache holds it' * page.cached}"
                            f" (want {ptes} and {want_ref})")
    for pfn, where in sorted(maps.items()):
        if pfn != zero and pfn not in snap.view.by_pfn:
            mm, addr, _entry = where[0]
            problems.append(f"mm {mm} maps {addr:#x} to pfn {pfn:#x}, which is no user page")
    return capped(problems)


@state_invariant("FAULT-I3", "RSS counters equal the present PTEs by page kind")
def rss_counters(snap: FaultSnapshot) -> list[str]:
    """get_mm_counter(mm, MM_ANONPAGES / MM_FILEPAGES / MM_SHMEMPAGES) equals the present
    PTEs of the mm mapping a page of that kind; the zero page counts nowhere; there is no
    swap, so MM_SWAPENTS stays 0."""
    problems = []
    for proc in snap.view.processes:
        counts = [0, 0, 0, 0]
        for entry in snap.ptes.get(proc.mm, {}).values():
            page = snap.view.by_pfn.get(pt.pte_pfn(entry)) if present(entry) else None
            if page is not None:
                counts[RSS_OF[page.kind]] += 1
        if tuple(counts) != proc.rss:
            names = ", ".join(f"{m.name} {proc.rss[m]} (PTEs: {counts[m]})" for m in RssMember
                              if proc.rss[m] != counts[m])
            problems.append(f"pid {proc.pid}: {names}")
    return capped(problems)


@state_invariant("FAULT-I4", "the zero page is never written, mapped writable or counted",
                 cost=Cost.PAGES)
def zero_page(snap: FaultSnapshot) -> list[str]:
    """The zero page stays all zeros, every PTE mapping it is read-only, and it is never a
    user page with counts (it lies outside rmap and RSS)."""
    problems = []
    zero = snap.view.zero_pfn
    if any(snap.page_contents(zero)):
        problems.append(f"the zero page (pfn {zero:#x}) holds non-zero bytes")
    for mm, addr, entry in mapped_pfns(snap).get(zero, ()):
        if entry & pt._PAGE_RW:
            problems.append(f"mm {mm} maps the zero page writable at {addr:#x} "
                            f"(pte {entry:#x})")
    if zero in snap.view.by_pfn:
        problems.append(f"the zero page (pfn {zero:#x}) is listed as a user page with counts")
    return capped(problems)


@state_invariant("FAULT-I5", "no user page is writable in two mms unless the mapping is shared")
def no_shared_writable_private(snap: FaultSnapshot) -> list[str]:
    """Two mms may both write one page only through VM_SHARED mappings; otherwise a store in
    one is a store in the other, which is what COW exists to prevent."""
    problems = []
    pid_of = _pid_of(snap)
    for pfn, where in sorted(mapped_pfns(snap).items()):
        writers = [(mm, addr) for mm, addr, entry in where if entry & pt._PAGE_RW]
        if len({mm for mm, _ in writers}) < 2:
            continue
        for mm, addr in writers:
            space = snap.spaces.get(pid_of.get(mm, -1))
            vma = space.find(addr) if space is not None else None
            if vma is None or vma.start > addr or not vma.flags & VM_SHARED:
                others = sorted({m for m, _ in writers} - {mm})
                problems.append(f"pfn {pfn:#x} is writable in mm {mm} at {addr:#x} through a "
                                f"private mapping and also writable in mm(s) {others}")
                break
    return capped(problems)


@state_invariant("FAULT-I6", "no translation a CPU uses grants more than the tables")
def tlb_coherent(snap: FaultSnapshot) -> list[str]:
    """TLB-I1 on the composed tables: after faults, COW breaks, munmap and exit, no CPU caches
    a translation to another pfn, with a permission taken away, or for a page no longer
    mapped; and no access ever reached a pfn holding no user page."""
    problems = []
    for cpu in snap.tlb.cpus:
        leaves = snap.ptes.get(cpu.loaded_mm - 1, {}) if cpu.loaded_mm > 0 else {}
        for entry in cpu.entries:
            vaddr = entry.vpage * PAGE_SIZE
            pte = leaves.get(vaddr, 0)
            why = grants_more(entry.flags, entry.pfn, pte)
            if why:
                problems.append(f"cpu{cpu.cpu} caches {vaddr:#x} -> pfn {entry.pfn:#x} for TLB "
                                f"mm {entry.mm}, but in the tables {why} (pte {pte:#x})")
    if snap.view.stray:
        problems.append("user accesses reached pfns holding no user page: "
                        + ", ".join(f"{pfn:#x}" for pfn in snap.view.stray))
    return capped(problems)


@state_invariant("FAULT-I7", "with no process left only the page cache holds pages",
                 needs_ledger=True, cost=Cost.PAGES)
def nothing_left_after_exit(snap: FaultSnapshot) -> list[str]:
    """Once every process has exited, no mm or table page remains, every user page left is
    a page-cache page held by the cache alone, and the allocator has every other page back
    (exit leaking a table page or an anon page shows here)."""
    if snap.view.processes or snap.ledger is None:
        return []
    problems = []
    if snap.tables.mms or snap.tables.tables:
        problems.append(f"{len(snap.tables.mms)} mms and {len(snap.tables.tables)} table pages "
                        f"remain (pfns {[t.pfn for t in snap.tables.tables][:8]})")
    for page in snap.view.pages:
        if not page.cached or page.refcount != 1 or page.mapcount:
            problems.append(f"pfn {page.pfn:#x} ({page.kind.value}) is still held: refcount "
                            f"{page.refcount}, mapcount {page.mapcount}, cached {page.cached}")
    free = sum(end - start for start, end in snap.pages.free_spans)
    want = snap.ledger.free_at_boot - len(snap.view.pages)
    if free != want:
        problems.append(f"{free} pages are free, but with {len(snap.view.pages)} page-cache "
                        f"pages held {want} should be ({want - free} leaked)")
    return capped(problems)
