"""Operation rules of the TLB model, TLB-R1 .. TLB-R6 (``specs/tlb.md``).

A rule judges one step from its arguments, its result, the views before and after and the
tables before and after.  TLB-R5 asks only that a flush did its job (safety, any policy);
TLB-R6 asks that it did exactly what 4.6 does, for implementations that claim 4.6's policy.
The expected states are computed here afresh from the spec, as set algebra over the views.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from invariants.registry import step_rule
from invariants.tlb import TlbStep, capped, describe_cpu, describe_entry
from specs.errno import Errno
from specs.machine import MachineConfig
from specs.pte import _PAGE_ACCESSED, _PAGE_DIRTY, PAGE_SHIFT, PAGE_SIZE
from specs.tlb import (
    INIT_MM,
    TLB_ENTRY_FLAGS,
    TLB_FLUSH_ALL,
    TLB_SINGLE_PAGE_FLUSH_CEILING,
    ULONG_MASK,
    VM_HUGETLB,
    Access,
    Capability,
    CpuTlbView,
    Outcome,
    TlbEntry,
    TlbView,
    fault_code,
    flushed_pages,
    is_canonical,
    is_kernel_address,
    permits,
    pte_pfn,
    vpage_of,
)

EINVAL = -Errno.EINVAL
FLUSH_OPS = ("flush_tlb_mm_range", "flush_tlb_page", "flush_tlb_all", "flush_tlb_kernel_range")
ALL_OPS = ("switch_mm", "enter_lazy_tlb", "access", *FLUSH_OPS)

# ---------------------------------------------------------------------------------------------
# TLB-R1: refusals
# ---------------------------------------------------------------------------------------------


def refused(config: MachineConfig, op: str, args: dict[str, int]) -> bool:
    """Whether the contract refuses the call with -EINVAL: a CPU that does not exist, an mm
    that is not a user mm, or an address that is not an unsigned long."""
    if not 0 <= args.get("cpu", 0) < config.nr_cpus:
        return True
    if "mm" in args and args["mm"] <= INIT_MM:
        return True
    return any(not 0 <= args[name] <= ULONG_MASK
               for name in ("vaddr", "start", "end", "vmflag") if name in args)


def _views_equal(before: TlbView, after: TlbView) -> str:
    if before.cpus != after.cpus:
        changed = [b.cpu for b, a in zip(before.cpus, after.cpus, strict=False) if a != b]
        return f"cpu{changed[0] if changed else '?'} changed"
    if before.mm_cpumask != after.mm_cpumask:
        return f"mm_cpumask changed from {before.mm_cpumask} to {after.mm_cpumask}"
    if before.events != after.events:
        return "the flush counters changed"
    return ""


@step_rule("TLB-R1", "bad arguments are refused and change nothing", ops=ALL_OPS)
def refusals(step: TlbStep) -> list[str]:
    """Bad input gets -EINVAL and leaves every CPU, mask, counter and table as it was; good
    input is never refused."""
    result = step.result
    if refused(step.config, step.op, step.args):
        problems = []
        if result != EINVAL:
            problems.append(f"returned {result!r}; the contract requires -EINVAL ({EINVAL})")
        changed = _views_equal(step.before, step.after)
        if changed:
            problems.append(f"the refused call changed the state: {changed}")
        if step.tables_before != step.tables_after:
            problems.append("the refused call changed the tables")
        return problems
    if isinstance(result, int) and result < 0:
        return [f"refused valid arguments with {result}"]
    if step.op != "access" and result != 0:
        return [f"returned {result!r}; success is 0"]
    return []


# ---------------------------------------------------------------------------------------------
# Views as mutable per-CPU records, for the expected states
# ---------------------------------------------------------------------------------------------


@attrs.define
class Cpu:
    """One CPU's state, mutable while an expectation is computed."""

    active_mm: int
    loaded_mm: int
    lazy: bool
    entries: dict[int, TlbEntry]
    irq_tlb_count: int

    @classmethod
    def of(cls, view: CpuTlbView) -> Cpu:
        """From the view."""
        return cls(view.active_mm, view.loaded_mm, view.lazy, {e.vpage: e for e in view.entries},
                   view.irq_tlb_count)

    def drop_non_global(self) -> None:
        """What a CR3 write does."""
        self.entries = {v: e for v, e in self.entries.items() if e.is_global}

    def drop_pages(self, pages: Iterable[int]) -> None:
        """What INVLPG of each page does."""
        for vpage in pages:
            self.entries.pop(vpage, None)


@attrs.define
class State:
    """Every CPU and mask, mutable."""

    cpus: list[Cpu]
    masks: dict[int, set[int]]
    #: the TlbEvents fields, when the expectation covers them (4.6's policy only)
    events: dict[str, int] | None = None

    @classmethod
    def of(cls, view: TlbView, events: bool = False) -> State:
        """From the view (with the counters when ``events``)."""
        return cls([Cpu.of(c) for c in view.cpus],
                   {mm: set(cpus) for mm, cpus in view.mm_cpumask},
                   attrs.asdict(view.events) if events else None)

    def count(self, event: str, n: int = 1) -> None:
        """count_vm_tlb_event, when counters are expected."""
        if self.events is not None:
            self.events[event] += n

    def mask(self, mm: int) -> set[int]:
        """mm_cpumask(mm)."""
        return self.masks.setdefault(mm, set())

    def leave(self, cpu: int) -> None:
        """leave_mm: out of the mask, swapper_pg_dir loaded."""
        state = self.cpus[cpu]
        if cpu in self.mask(state.active_mm):
            self.mask(state.active_mm).discard(cpu)
            state.loaded_mm = INIT_MM
            state.drop_non_global()

    def differences(self, view: TlbView) -> list[str]:
        """Where the view departs from this expectation, in words."""
        problems = []
        for number, (want, got) in enumerate(zip(self.cpus, view.cpus, strict=False)):
            name = describe_cpu(got)
            for field in ("active_mm", "loaded_mm", "lazy"):
                if getattr(want, field) != getattr(got, field):
                    problems.append(f"{name}: {field} is {getattr(got, field)}, 4.6 gives "
                                    f"{getattr(want, field)}")
            have = {e.vpage: e for e in got.entries}
            for vpage in sorted(set(want.entries) | set(have)):
                if vpage not in have:
                    problems.append(f"cpu{number} dropped {describe_entry(want.entries[vpage])}"
                                    f", which 4.6 keeps")
                elif vpage not in want.entries:
                    problems.append(f"cpu{number} still caches {describe_entry(have[vpage])}, "
                                    f"which 4.6 drops")
                elif have[vpage] != want.entries[vpage]:
                    problems.append(f"cpu{number} caches {describe_entry(have[vpage])}, 4.6 "
                                    f"keeps {describe_entry(want.entries[vpage])}")
        masks = {mm: tuple(sorted(cpus)) for mm, cpus in self.masks.items() if cpus}
        if masks != dict(view.mm_cpumask):
            problems.append(f"mm_cpumask is {dict(view.mm_cpumask)}, 4.6 gives {masks}")
        if self.events is not None:
            counted = attrs.asdict(view.events)
            problems += [f"{name} is {counted[name]}, 4.6 counts {want}"
                         for name, want in self.events.items() if counted[name] != want]
            problems += [f"cpu{number}.irq_tlb_count is {got_cpu.irq_tlb_count}, 4.6 counts "
                         f"{want_cpu.irq_tlb_count}"
                         for number, (want_cpu, got_cpu) in enumerate(
                             zip(self.cpus, view.cpus, strict=False))
                         if want_cpu.irq_tlb_count != got_cpu.irq_tlb_count]
        return problems


# ---------------------------------------------------------------------------------------------
# TLB-R2, TLB-R3: context switches
# ---------------------------------------------------------------------------------------------


@step_rule("TLB-R2", "switch_mm loads the next mm and keeps global entries", ops=("switch_mm",))
def switch_rule(step: TlbStep) -> list[str]:
    """[4.6: switch_mm] the CPU runs next (TLBSTATE_OK), holds next's tables and is in
    next's mask and no other; a CR3 load happened, dropping every non-global entry, unless
    it came back to the mm it was lazily borrowing and was still in that mm's mask (then
    nothing was missed and nothing is dropped); global entries always survive; no other CPU
    changes."""
    if step.result != 0:
        return []
    cpu, next_mm = step.args["cpu"], step.args["mm"]
    state = State.of(step.before)
    me = state.cpus[cpu]
    prev = me.active_mm
    reload = prev != next_mm or cpu not in state.mask(next_mm)
    if prev != INIT_MM:
        state.mask(prev).discard(cpu)
    state.mask(next_mm).add(cpu)
    me.active_mm, me.loaded_mm, me.lazy = next_mm, next_mm, False
    if reload:
        me.drop_non_global()
    return capped(state.differences(step.after))


@step_rule("TLB-R3", "enter_lazy_tlb keeps the mm loaded", ops=("enter_lazy_tlb",))
def lazy_rule(step: TlbStep) -> list[str]:
    """[4.6: enter_lazy_tlb] a kernel thread borrows the previous mm: the CPU turns lazy and
    nothing else changes (no CR3 write, no mask change, no entry dropped)."""
    if step.result != 0:
        return []
    state = State.of(step.before)
    state.cpus[step.args["cpu"]].lazy = True
    return capped(state.differences(step.after))


# ---------------------------------------------------------------------------------------------
# TLB-R4: the fill rule
# ---------------------------------------------------------------------------------------------


def expected_access(step: TlbStep) -> tuple[Access, TlbEntry | None, int | None]:
    """(result, the entry for the page afterwards, the table entry's A/D bits to be set)."""
    args = step.args
    cpu, vaddr = args["cpu"], args["vaddr"]
    write, exec_ = bool(args["write"]), bool(args["exec"])
    if not is_canonical(vaddr):
        return Access(Outcome.GENERAL_PROTECTION), None, None
    me = step.before.cpus[cpu]
    vpage = vpage_of(vaddr)
    cached = me.entry(vpage)
    if cached is not None:
        if not permits(cached.flags, vaddr, write, exec_):
            return Access(Outcome.PAGE_FAULT,
                          error_code=fault_code(True, vaddr, write, exec_)), None, None
        if not write or cached.flags & _PAGE_DIRTY:
            return Access(Outcome.HIT, cached.pfn, cached.flags), cached, None
    pte = step.tables_before.lookup(me.loaded_mm, vaddr)
    if not permits(pte, vaddr, write, exec_):
        return (Access(Outcome.PAGE_FAULT, error_code=fault_code(
            bool(pte & 1), vaddr, write, exec_)), None, None)
    bits = _PAGE_ACCESSED | (_PAGE_DIRTY if write else 0)
    flags = (pte | bits) & TLB_ENTRY_FLAGS
    entry = TlbEntry(vpage=vpage, pfn=pte_pfn(pte), flags=flags, mm=me.loaded_mm)
    return Access(Outcome.FILL, pte_pfn(pte), flags), entry, bits


@step_rule("TLB-R4", "an access hits, fills with A and D set, or faults", ops=("access",))
def fill_rule(step: TlbStep) -> list[str]:
    """An access uses a cached entry that permits it (a store needs a cached D too);
    otherwise it walks CR3's tables: a permitted access sets ACCESSED, and DIRTY on a store,
    in the table entry and caches exactly the entry's hardware bits; a refused one faults
    with the x86 error code and caches nothing; a cached entry that refuses the access is
    dropped by the fault.  Nothing else changes."""
    if not isinstance(step.result, Access):
        return []
    want, entry, bits = expected_access(step)
    problems = []
    if step.result != want:
        problems.append(f"the access gave {step.result}, the fill rule gives {want}")
    cpu = step.args["cpu"]
    vaddr = step.args["vaddr"]
    state = State.of(step.before)
    if is_canonical(vaddr):
        vpage = vpage_of(vaddr)
        state.cpus[cpu].entries.pop(vpage, None)
        if entry is not None:
            state.cpus[cpu].entries[vpage] = entry
    problems += state.differences(step.after)
    loaded = step.before.cpus[cpu].loaded_mm
    if bits is None:
        if step.tables_before != step.tables_after:
            problems.append("the tables changed, though nothing was filled")
    else:
        pte_before = step.tables_before.lookup(loaded, vaddr)
        pte_after = step.tables_after.lookup(loaded, vaddr)
        if pte_after != pte_before | bits:
            problems.append(f"the table entry for {vaddr:#x} in mm {loaded} is "
                            f"{pte_after:#x} after the fill; the walk leaves {pte_before | bits:#x}"
                            f" (ACCESSED{', DIRTY' if bits & _PAGE_DIRTY else ''} set)")
        if _other_entries(step, loaded, vaddr):
            problems.append("table entries other than the one walked changed")
    return capped(problems)


def _other_entries(step: TlbStep, mm: int, vaddr: int) -> bool:
    before, after = step.tables_before, step.tables_after
    vpage = vpage_of(vaddr)
    if is_kernel_address(vaddr):
        keep_k = {k: v for k, v in before.kernel.items() if k != vpage}
        return keep_k != {k: v for k, v in after.kernel.items() if k != vpage} or (
            before.user != after.user)
    keep_u = {k: v for k, v in before.user.items() if k != (mm, vpage)}
    return keep_u != {k: v for k, v in after.user.items() if k != (mm, vpage)} or (
        before.kernel != after.kernel)


# ---------------------------------------------------------------------------------------------
# TLB-R5: a flush reaches every CPU that may use what it flushes
# ---------------------------------------------------------------------------------------------


@step_rule("TLB-R5", "after a flush no CPU caches what it flushed", ops=FLUSH_OPS)
def flush_safety(step: TlbStep) -> list[str]:
    """Whatever the flushing policy: after flush_tlb_mm_range or flush_tlb_page no CPU holds
    a non-global entry of that mm for a page of the range (every page when the range means
    everything); after flush_tlb_kernel_range no CPU holds any entry for a page of the range
    (every kernel-half page when it means everything); after flush_tlb_all no CPU holds
    anything."""
    if step.result != 0:
        return []
    op, args = step.op, step.args
    problems = []
    for cpu in step.after.cpus:
        for entry in cpu.entries:
            if op == "flush_tlb_all":
                hit = True
            elif op == "flush_tlb_kernel_range":
                pages = flushed_pages(args["start"], args["end"])
                hit = (is_kernel_address(entry.vpage << PAGE_SHIFT) if pages is None
                       else entry.vpage in pages)
            else:
                if op == "flush_tlb_page":
                    pages = range(vpage_of(args["vaddr"]), vpage_of(args["vaddr"]) + 1)
                else:
                    pages = flushed_pages(args["start"], args["end"])
                hit = (not entry.is_global and entry.mm == args["mm"]
                       and (pages is None or entry.vpage in pages))
            if hit:
                problems.append(f"{describe_cpu(cpu)} still caches {describe_entry(entry)}")
    return capped(problems)


# ---------------------------------------------------------------------------------------------
# TLB-R6: 4.6's flushing policy
# ---------------------------------------------------------------------------------------------


def _remote(state: State, sender: int, mm: int, start: int, end: int) -> None:
    """[4.6: native_flush_tlb_others, flush_tlb_func] every other CPU of the mask."""
    if end == 0:
        end = (start + PAGE_SIZE) & ULONG_MASK
    state.count("nr_tlb_remote_flush")
    for number in sorted(state.mask(mm) - {sender}):
        cpu = state.cpus[number]
        cpu.irq_tlb_count += 1
        if cpu.active_mm != mm:
            continue
        state.count("nr_tlb_remote_flush_received")
        if cpu.lazy:
            state.leave(number)
        elif end == TLB_FLUSH_ALL:
            cpu.drop_non_global()
        else:
            cpu.drop_pages(flushed_pages(start, end) or ())


def expected_flush(step: TlbStep) -> State:
    """The state 4.6 leaves after one flush operation, counters included."""
    state = State.of(step.before, events=True)
    args, op = step.args, step.op
    if op == "flush_tlb_all":
        state.count("nr_tlb_remote_flush")
        for number, cpu in enumerate(state.cpus):
            state.count("nr_tlb_remote_flush_received")
            cpu.entries.clear()
            if cpu.lazy:
                state.leave(number)
        return state
    if op == "flush_tlb_kernel_range":
        start, end = args["start"], args["end"]
        everything = end == TLB_FLUSH_ALL or (end - start) & ULONG_MASK > (
            TLB_SINGLE_PAGE_FLUSH_CEILING * PAGE_SIZE)
        for number, cpu in enumerate(state.cpus):
            if everything:
                state.count("nr_tlb_remote_flush_received")
                cpu.entries.clear()
                if cpu.lazy:
                    state.leave(number)
            else:
                cpu.drop_pages(flushed_pages(start, end) or ())
        return state
    sender, mm = args["cpu"], args["mm"]
    me = state.cpus[sender]
    if op == "flush_tlb_page":
        vaddr = args["vaddr"]
        if me.active_mm == mm:
            if me.lazy:
                state.leave(sender)
            else:
                state.count("nr_tlb_local_flush_one")
                me.drop_pages([vpage_of(vaddr)])
        if state.mask(mm) - {sender}:
            _remote(state, sender, mm, vaddr, 0)
        return state
    start, end = args["start"], args["end"]
    narrowed = False
    if me.active_mm == mm:
        if me.lazy:
            state.leave(sender)
        else:
            everything = end == TLB_FLUSH_ALL or bool(args.get("vmflag", 0) & VM_HUGETLB) or (
                ((end - start) & ULONG_MASK) >> PAGE_SHIFT > TLB_SINGLE_PAGE_FLUSH_CEILING)
            if everything:
                state.count("nr_tlb_local_flush_all")
                me.drop_non_global()
            else:
                narrowed = True
                pages = flushed_pages(start, end) or range(0)
                state.count("nr_tlb_local_flush_one", len(pages))
                me.drop_pages(pages)
    if not narrowed:
        start, end = 0, TLB_FLUSH_ALL
    if state.mask(mm) - {sender}:
        _remote(state, sender, mm, start, end)
    return state


@step_rule("TLB-R6", "flushes follow 4.6's policy", ops=FLUSH_OPS,
           needs=(Capability.EXACT_FLUSH,))
def flush_policy(step: TlbStep) -> list[str]:
    """[4.6: flush_tlb_mm_range, flush_tlb_page, flush_tlb_func, flush_tlb_all,
    flush_tlb_kernel_range] exactly 4.6's entries dropped and kept, and 4.6's counts: more
    than 33 pages (or TLB_FLUSH_ALL, or hugetlb) reload CR3 and keep global entries, fewer
    are INVLPG'd one by one and the rest stays; other CPUs of the mask flush the same range,
    or everything when the sender flushed everything or does not run the mm; lazy CPUs
    leave the mm instead; the vm_tlb events and irq_tlb_count move as 4.6 counts them."""
    if step.result != 0:
        return []
    return capped(expected_flush(step).differences(step.after))
