"""Operation rules of the composed kernel, FAULT-R1 .. FAULT-R5 (``specs/fault.md``).

A rule judges one step from its arguments and result, and, for the rules in
:data:`SNAPSHOT_RULES`, from the composed state before and after it, so it holds in contract
mode whatever pages an implementation picks.  Taking the two snapshots costs O(tables +
free blocks + VMAs) per step, so a machine takes them only when such a rule is enabled.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any, Final

import attrs

from invariants.fault import FaultSnapshot, present
from invariants.registry import step_rule
from specs import pte as pt
from specs.kernel import (
    BUS_ADRERR,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SI_KERNEL,
    SIGBUS,
    SIGSEGV,
    VM_FAULT_OOM,
    FaultResult,
    PageKind,
    RssMember,
)
from specs.vma import TASK_SIZE, VM_EXEC, VM_GROWSDOWN, VM_READ, VM_SHARED, VM_WRITE, VmaView

PAGE_SIZE: Final = pt.PAGE_SIZE
#: The rules that read ``FaultStep.before`` / ``after``; a machine snapshots only for them.
SNAPSHOT_RULES: Final = frozenset({"FAULT-R2", "FAULT-R3", "FAULT-R4", "FAULT-R5"})
#: The operations that run user accesses on a CPU (args ``cpu`` and ``addr``).
ACCESSES: Final = ("read", "write", "copy_from_user", "copy_to_user")


@attrs.frozen
class FaultStep:
    """One operation as a step rule judges it: the call, its result and, when a rule of
    :data:`SNAPSHOT_RULES` is enabled, the composed state around it.  A ``before``
    snapshot's page and file contents are not kept: rules read only its views."""

    op: str
    args: dict[str, Any]
    result: Any
    before: FaultSnapshot | None = None
    after: FaultSnapshot | None = None

    @property
    def pid(self) -> int:
        """The process an access ran as (the one on ``cpu`` before it), else ``pid``, or 0."""
        if "cpu" in self.args and self.before is not None:
            running = self.before.view.running
            cpu = self.args["cpu"]
            return running[cpu] if 0 <= cpu < len(running) else 0
        pid: int = self.args.get("pid", 0)
        return pid

    def done(self) -> int | None:
        """Bytes an access transferred before it stopped; None for a call refused outright
        (a negative errno, or a result of the wrong shape)."""
        result, op = self.result, self.op
        if isinstance(result, FaultResult):
            return result.done
        if op == "read" and isinstance(result, bytes):
            return len(result)
        if op == "write" and isinstance(result, int) and result >= 0:
            return result
        if op == "copy_from_user" and isinstance(result, tuple):
            return int(self.args["n"]) - int(result[0])
        if op == "copy_to_user" and isinstance(result, int) and result >= 0:
            return len(self.args["data"]) - result
        return None


def pages_of(addr: int, n: int) -> Iterator[int]:
    """The start of each page-sized piece an access of n bytes at addr goes through, in
    order: addr itself, then every page boundary below addr + n."""
    pos = addr
    while pos < addr + n:
        yield pos
        pos = (pos & pt.PAGE_MASK) + PAGE_SIZE


def taken_pfns(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[int]:
    """The pfns free before a step and not free after it (both sorted [start, end) spans):
    what the step took from the allocator and kept."""
    taken: list[int] = []
    starts = [start for start, _end in after]
    for start, end in before:
        pos = start
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        while pos < end:
            if i < len(after) and after[i][1] <= pos:
                i += 1
                continue
            if i < len(after) and after[i][0] <= pos:
                pos = after[i][1]
                continue
            stop = min(end, after[i][0]) if i < len(after) else end
            taken.extend(range(pos, stop))
            pos = stop
    return taken


def _live_holders(snap: FaultSnapshot) -> tuple[set[int], set[int]]:
    """(table pages of live processes' mms, pfns a live mm's PTE or a page cache holds)."""
    live = {proc.mm for proc in snap.view.processes}
    tables = {table.pfn for table in snap.tables.tables if table.mm in live}
    held = {pfn for inode in snap.view.inodes for _index, pfn in inode.cache}
    for mm in live:
        held.update(pt.pte_pfn(entry) for entry in snap.ptes.get(mm, {}).values()
                    if present(entry))
    return tables, held


@step_rule("FAULT-R1", "copy_from_user zero-fills what it did not copy",
           ops=("copy_from_user",))
def copy_from_user_tail(step: FaultStep) -> list[str]:
    """The uncopied count is within [0, n], the buffer is n bytes long, and its last
    ``uncopied`` bytes are zero, so a caller that ignores the count never sees stale kernel
    memory [4.6: arch/x86/lib/usercopy_64.c copy_user_handle_tail]."""
    if not isinstance(step.result, tuple):
        return []
    n = step.args["n"]
    left, buffer = step.result
    if not 0 <= left <= n or len(buffer) != n:
        return [f"copy_from_user of {n} bytes returned {left} uncopied and a buffer of "
                f"{len(buffer)} bytes"]
    tail = buffer[n - left:]
    if any(tail):
        first = next(i for i, b in enumerate(tail) if b)
        return [f"copy_from_user(addr={step.args['addr']:#x}, n={n}) left {left} bytes "
                f"uncopied, but the buffer's tail is not zeroed: byte {n - left + first} is "
                f"{tail[first]:#04x}"]
    return []


@step_rule("FAULT-R2", "a read fault on anonymous memory allocates nothing but page tables",
           ops=("read", "copy_from_user"))
def read_fault_allocates_no_page(step: FaultStep) -> list[str]:
    """A load never creates an anonymous page or moves MM_ANONPAGES: an anonymous read
    fault maps the zero page; the allocator gives up no more pages than the new table pages
    and the new page-cache pages (a file read fault) account for [4.6: mm/memory.c
    do_anonymous_page]."""
    before, after = step.before, step.after
    pid = step.pid
    if before is None or after is None or pid not in before.view.by_pid:
        return []
    problems = []
    new = [page for page in after.view.pages if page.pfn not in before.view.by_pfn]
    anon = [page.pfn for page in new if page.kind is PageKind.ANON]
    if anon:
        problems.append(f"{step.op} at {step.args['addr']:#x} created anon pages "
                        f"{[hex(pfn) for pfn in anon]}")
    was = before.view.by_pid[pid].rss[RssMember.MM_ANONPAGES]
    now = after.view.by_pid.get(pid)
    if now is not None and now.rss[RssMember.MM_ANONPAGES] != was:
        problems.append(f"{step.op} at {step.args['addr']:#x} moved pid {pid}'s MM_ANONPAGES "
                        f"from {was} to {now.rss[RssMember.MM_ANONPAGES]}")
    taken = taken_pfns(before.pages.free_spans, after.pages.free_spans)
    new_tables = {t.pfn for t in after.tables.tables} - {t.pfn for t in before.tables.tables}
    cached = [page for page in new if page.cached]
    if len(taken) > len(new_tables) + len(cached):
        problems.append(f"{step.op} at {step.args['addr']:#x} took {len(taken)} pages from "
                        f"the allocator, but only {len(new_tables)} new table pages and "
                        f"{len(cached)} new page-cache pages account for them")
    problems.extend(_anon_reads_map_zero(step, before, after, pid))
    return problems


def _anon_reads_map_zero(step: FaultStep, before: FaultSnapshot, after: FaultSnapshot,
                         pid: int) -> list[str]:
    """Every PTE of an anonymous private VMA the load filled in maps the zero page."""
    done = step.done()
    proc = after.view.by_pid.get(pid)
    space = before.spaces.get(pid)
    if done is None or proc is None or space is None:
        return []
    old, new = before.ptes.get(proc.mm, {}), after.ptes.get(proc.mm, {})
    problems = []
    for pos in pages_of(step.args["addr"], done):
        page = pos & pt.PAGE_MASK
        vma = space.find(page)
        if (vma is None or vma.start > page or vma.file is not None or present(old.get(page, 0))
                or not present(new.get(page, 0))):
            continue
        if pt.pte_pfn(new[page]) != after.view.zero_pfn:
            problems.append(f"a load at {pos:#x} (anonymous private VMA) mapped pfn "
                            f"{pt.pte_pfn(new[page]):#x}, not the zero page")
    return problems


@step_rule("FAULT-R3", "a write-protect fault reuses an anon page exactly at mapcount 1",
           ops=("write", "copy_to_user"))
def wp_reuse_at_mapcount_one(step: FaultStep) -> list[str]:
    """A store to a present read-only PTE in a writable VMA keeps the pfn exactly when 4.6's
    do_wp_page reuses the page: an anon page mapped once (reuse_swap_page: page_mapcount
    <= 1, the refcount not consulted), or any page of a shared writable mapping; an anon
    page mapped more than once, a page-cache page in a private mapping and the zero page
    are copied to a new pfn [4.6: mm/memory.c do_wp_page, wp_page_reuse, wp_page_copy;
    mm/swapfile.c reuse_swap_page]."""
    before, after = step.before, step.after
    pid, done = step.pid, step.done()
    if before is None or after is None or done is None:
        return []
    proc, space = before.view.by_pid.get(pid), before.spaces.get(pid)
    if proc is None or space is None or pid not in after.view.by_pid:
        return []
    old, new = before.ptes.get(proc.mm, {}), after.ptes.get(proc.mm, {})
    problems = []
    for pos in pages_of(step.args["addr"], done):
        page = pos & pt.PAGE_MASK
        entry = old.get(page, 0)
        vma = space.find(page)
        if (not present(entry) or entry & pt._PAGE_RW or vma is None or vma.start > page
                or not vma.flags & VM_WRITE or not present(new.get(page, 0))):
            continue
        pfn, now = pt.pte_pfn(entry), pt.pte_pfn(new[page])
        user = before.view.by_pfn.get(pfn)
        if pfn == before.view.zero_pfn:
            reuse, why = bool(vma.flags & VM_SHARED), "the zero page"
        elif user is None:
            continue
        elif vma.flags & VM_SHARED:
            reuse, why = True, f"a {user.kind.value} page of a shared writable mapping"
        elif user.kind is PageKind.ANON:
            reuse, why = user.mapcount == 1, f"an anon page with mapcount {user.mapcount}"
        else:
            reuse, why = False, f"a {user.kind.value} page in a private mapping"
        if reuse and now != pfn:
            problems.append(f"a store at {pos:#x} to {why} (pfn {pfn:#x}) copied it to pfn "
                            f"{now:#x} instead of reusing it")
        elif not reuse and now == pfn:
            problems.append(f"a store at {pos:#x} to {why} (pfn {pfn:#x}) reused it in place "
                            f"instead of copying it")
    return problems


@step_rule("FAULT-R4", "a fault or fork leaks no page, even when it fails",
           ops=("fork", *ACCESSES))
def no_leak_on_failure(step: FaultStep) -> list[str]:
    """Every page a fault or fork took from the allocator is, afterwards, a table page of a
    live process's mm or a page a live PTE or a page cache holds; a failed fork leaves no
    child.  A fault that fails with VM_FAULT_OOM puts back the data page it had, and a fork
    that fails tears the half-built child down, tables and all [4.6: mm/memory.c
    do_cow_fault, wp_page_copy; kernel/fork.c dup_mm (mmput on failure)]."""
    before, after = step.before, step.after
    if before is None or after is None:
        return []
    problems = []
    if step.op == "fork" and isinstance(step.result, int) and step.result < 0:
        born = sorted(set(after.view.by_pid) - set(before.view.by_pid))
        if born:
            problems.append(f"fork(pid={step.args['pid']}) returned {step.result} but left "
                            f"processes {born}")
    taken = taken_pfns(before.pages.free_spans, after.pages.free_spans)
    if not taken:
        return problems
    tables, held = _live_holders(after)
    leaked = [pfn for pfn in taken if pfn not in tables and pfn not in held]
    if leaked:
        dead = [pfn for pfn in leaked if pfn in after.tables.by_pfn]
        problems.append(f"{step.op} returned {_short(step.result)} and kept {len(leaked)} "
                        f"pages no live mm or page cache holds: "
                        f"{[hex(pfn) for pfn in leaked[:8]]}"
                        + (f" ({len(dead)} of them table pages of a dead mm)" if dead else ""))
    return problems


def _short(result: Any) -> str:
    text = repr(result)
    return text if len(text) <= 80 else text[:77] + "..."


# -- FAULT-R5: which access gets which signal ---------------------------------------------------

@attrs.frozen
class Expect:
    """The expected outcome of touching one page: ``signal`` 0 for none; ``maybe`` when 4.6
    may either succeed (stack growth, a guard page) or send that signal."""

    signal: int
    si_code: int = 0
    si_addr: int = 0
    maybe: bool = False

    def allows_success(self) -> bool:
        return self.signal == 0 or self.maybe

    def describe(self) -> str:
        if self.signal == 0:
            return "no signal"
        name = {SIGSEGV: "SIGSEGV", SIGBUS: "SIGBUS"}.get(self.signal, str(self.signal))
        return (f"{'no signal or ' if self.maybe else ''}{name} si_code {self.si_code:#x} "
                f"at {self.si_addr:#x}")


def expect_access(snap: FaultSnapshot, pid: int, addr: int, write: bool) -> Expect:
    """What 4.6 does for a user access at addr, from the address space before the step
    [4.6: arch/x86/mm/fault.c do_general_protection (non-canonical), __do_page_fault,
    bad_area, access_error; mm/mmap.c expand_stack; mm/memory.c check_stack_guard_page;
    mm/filemap.c filemap_fault]."""
    if not pt.is_canonical(addr):
        return Expect(SIGSEGV, SI_KERNEL, 0)
    if addr >= TASK_SIZE:
        return Expect(SIGSEGV, SEGV_MAPERR, addr)
    space = snap.spaces[pid]
    vma = space.find(addr)
    if vma is None or (vma.start > addr and not vma.flags & VM_GROWSDOWN):
        return Expect(SIGSEGV, SEGV_MAPERR, addr)
    if vma.start > addr:
        # expand_stack may refuse, and must for a stack grown beyond the gap mmap_base
        # leaves below TASK_SIZE, which is never smaller than RLIMIT_STACK [4.6:
        # arch/x86/mm/mmap.c mmap_base; mm/mmap.c acct_stack_growth]
        beyond = vma.end - (addr & pt.PAGE_MASK) > TASK_SIZE - space.mmap_base + PAGE_SIZE
        return Expect(SIGSEGV, SEGV_MAPERR, addr, maybe=not beyond)
    if (not vma.flags & VM_WRITE) if write else not vma.flags & (VM_READ | VM_WRITE | VM_EXEC):
        return Expect(SIGSEGV, SEGV_ACCERR, addr)
    if vma.file is not None and _past_eof(snap, pid, vma, addr):
        return Expect(SIGBUS, BUS_ADRERR, addr)
    if vma.flags & VM_GROWSDOWN and addr < vma.start + PAGE_SIZE:
        return Expect(SIGSEGV, SEGV_MAPERR, addr, maybe=True)  # the stack guard page
    return Expect(0)


def _past_eof(snap: FaultSnapshot, pid: int, vma: VmaView, addr: int) -> bool:
    files = dict(snap.view.by_pid[pid].files)
    inode = next((n for n in snap.view.inodes if n.ident == files.get(vma.file or 0)), None)
    if inode is None:
        return False
    index = ((addr - vma.start) >> pt.PAGE_SHIFT) + vma.pgoff
    return index >= (inode.size + PAGE_SIZE - 1) // PAGE_SIZE


@step_rule("FAULT-R5", "a bad access gets 4.6's signal and si_code at the faulting address",
           ops=ACCESSES)
def access_signals(step: FaultStep) -> list[str]:
    """Judged page by page from the address space before the step: outside every VMA,
    SIGSEGV/SEGV_MAPERR; a VMA without the right permission, SEGV_ACCERR; a kernel address,
    SEGV_MAPERR; a non-canonical one, SIGSEGV/SI_KERNEL at 0 (a #GP); a file page past EOF,
    SIGBUS/BUS_ADRERR; below a stack, whatever expand_stack decides.  An access stops at
    the first page that signals and nowhere earlier (but for VM_FAULT_OOM); a copy stops
    there too and reports the rest uncopied [4.6: arch/x86/mm/fault.c __do_page_fault,
    access_error; arch/x86/lib/usercopy_64.c copy_user_handle_tail]."""
    before, done = step.before, step.done()
    pid = step.pid
    if before is None or done is None or pid not in before.spaces:
        return []
    addr, write = step.args["addr"], step.op in ("write", "copy_to_user")
    n = step.args["n"] if "n" in step.args else len(step.args["data"])
    copy = step.op.startswith("copy")
    if copy and not 0 <= addr <= addr + n <= pt.TASK_SIZE_MAX:
        return [] if done == 0 else [f"{step.op} of {n} bytes at {addr:#x} fails access_ok "
                                     f"but copied {done} bytes"]
    problems = []
    grown = step.after.spaces.get(pid) if step.after is not None else None
    for pos in pages_of(addr, done):
        want = expect_access(before, pid, pos, write)
        if not want.allows_success():
            problems.append(f"{step.op} went through {pos:#x}, where 4.6 gives "
                            f"{want.describe()}")
            break
        vma = grown.find(pos) if grown is not None and want.maybe else None
        if want.maybe and grown is not None and (vma is None or vma.start > pos):
            problems.append(f"{step.op} went through {pos:#x} below the stack, but no VMA "
                            f"covers it after the step (the stack did not grow)")
            break
    if problems or done == n:
        return problems
    stop = addr + done
    if stop != addr and stop % PAGE_SIZE:
        return [f"{step.op} of {n} bytes at {addr:#x} stopped at {stop:#x}, inside a page"]
    result = step.result
    if copy or not isinstance(result, FaultResult) or result.signal not in (0, SIGSEGV, SIGBUS):
        return []
    want = expect_access(before, pid, stop, write)
    if result.signal == 0:
        if not result.vm_fault & VM_FAULT_OOM or not want.allows_success():
            return [f"{step.op} at {stop:#x} ended without a signal (vm_fault "
                    f"{result.vm_fault:#x}) where 4.6 gives {want.describe()}"]
        return []
    got = (result.signal, result.si_code, result.addr)
    if want.signal == 0 or got != (want.signal, want.si_code, want.si_addr):
        return [f"{step.op} at {stop:#x} got signal {result.signal} si_code "
                f"{result.si_code:#x} at {result.addr:#x}, where 4.6 gives {want.describe()}"]
    return []
