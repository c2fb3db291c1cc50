"""The reference TLB model: 4.6's x86-64 flush code, each function named after the one it models.

Read it beside ``arch/x86/mm/tlb.c``, ``arch/x86/include/asm/tlbflush.h`` and
``arch/x86/include/asm/mmu_context.h``.  The machine has ``nr_cpus`` CPUs; each one has a TLB
(a map from virtual page to the translation it caches), the per-cpu ``cpu_tlbstate``
(``active_mm`` and OK/LAZY) and the tables CR3 currently holds.  ``mm_cpumask(mm)`` is the set
of CPUs that flushes of ``mm`` must reach.  An IPI is a direct call of the handler on the
target CPU: every operation runs to completion before the next one starts, which is what a
synchronous ``smp_call_function_many(..., wait=1)`` guarantees to its caller.

:class:`RefTlb` is the adapter that satisfies ``specs.tlb.Tlb``; :class:`DictTables` is a tiny
table source for tests and the state machine (the page-table subsystem provides a real one).

[Simplified: unbounded TLB capacity and no spontaneous evictions; no PCIDs (as in 4.6); no
paging-structure caches; 4 KiB translations only.]
"""

from __future__ import annotations

import enum

import attrs

from specs.errno import Errno
from specs.machine import MachineConfig
from specs.pte import _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, PAGE_SIZE
from specs.tlb import (
    ALL_CAPABILITIES,
    INIT_MM,
    TLB_ENTRY_FLAGS,
    TLB_FLUSH_ALL,
    TLB_SINGLE_PAGE_FLUSH_CEILING,
    ULONG_MASK,
    VM_HUGETLB,
    Access,
    Capability,
    CpuTlbView,
    NoTables,
    Outcome,
    TableView,
    TlbEntry,
    TlbEvents,
    TlbView,
    TranslationSource,
    fault_code,
    is_canonical,
    is_kernel_address,
    permits,
    pte_pfn,
    vpage_of,
)

EINVAL = -Errno.EINVAL


class TlbState(enum.Enum):
    """[4.6: arch/x86/include/asm/tlbflush.h] cpu_tlbstate.state."""

    OK = 1  # a user task runs: its mm is active and loaded
    LAZY = 2  # a kernel thread runs on the previous task's mm


@attrs.define
class CpuTlb:
    """One CPU: cpu_tlbstate, the tables CR3 holds, and the TLB's entries by page.

    A CPU boots running its idle thread: a kernel thread on init_mm, so it is lazy.
    """

    active_mm: int = INIT_MM
    loaded_mm: int = INIT_MM
    state: TlbState = TlbState.LAZY
    entries: dict[int, TlbEntry] = attrs.field(factory=dict)
    irq_tlb_count: int = 0


@attrs.define
class Machine:
    """Every CPU, every mm_cpumask and the vm_tlb event counters."""

    cpus: list[CpuTlb]
    #: user mm -> CPUs in mm_cpumask(mm).  [Simplified: init_mm's cpumask is not kept; no
    #: flush ever targets init_mm by mask (kernel flushes go to every CPU).]
    mm_cpumask: dict[int, set[int]] = attrs.field(factory=dict)
    events: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(
        ("nr_tlb_remote_flush", "nr_tlb_remote_flush_received", "nr_tlb_local_flush_all",
         "nr_tlb_local_flush_one"), 0))

    def cpumask(self, mm: int) -> set[int]:
        """mm_cpumask(mm), created empty on first use."""
        return self.mm_cpumask.setdefault(mm, set())

    def count_vm_tlb_event(self, event: str) -> None:
        """[4.6: count_vm_tlb_event] (CONFIG_DEBUG_TLBFLUSH)."""
        self.events[event] += 1


# ---------------------------------------------------------------------------------------------
# What one CPU's TLB does on its own (the hardware and the local primitives)
# ---------------------------------------------------------------------------------------------


def load_cr3(m: Machine, cpu: int, mm: int) -> None:
    """[4.6: load_cr3] a CR3 write drops every non-global entry; global ones survive."""
    tlb = m.cpus[cpu]
    tlb.entries = {vpage: e for vpage, e in tlb.entries.items() if e.is_global}
    tlb.loaded_mm = mm


def local_flush_tlb(m: Machine, cpu: int) -> None:
    """[4.6: __native_flush_tlb] rewrite CR3 with its own value."""
    load_cr3(m, cpu, m.cpus[cpu].loaded_mm)


def __flush_tlb_single(m: Machine, cpu: int, addr: int) -> None:
    """[4.6: __native_flush_tlb_single] INVLPG: the page's entry goes, global or not."""
    m.cpus[cpu].entries.pop(vpage_of(addr), None)


def __flush_tlb_all(m: Machine, cpu: int) -> None:
    """[4.6: __flush_tlb_all, __native_flush_tlb_global] toggling CR4.PGE drops everything."""
    m.cpus[cpu].entries.clear()


def mmu_access(m: Machine, tables: TranslationSource, cpu: int, vaddr: int, write: bool,
               exec_: bool) -> Access:
    """The MMU translating one access on one CPU (the hardware, not 4.6 code).

    A cached entry that permits the access is used.  A store through an entry whose DIRTY
    is clear walks again, as the hardware must, to set DIRTY in the table.  A cached entry
    that does not permit the access faults, and the fault invalidates it (a spurious fault
    when the table has since been upgraded: 4.6 fixes nothing and the retry refills).  On a
    miss the walk reads the leaf through CR3; a permitted access sets ACCESSED (and DIRTY on
    a store) in the table and caches the entry's hardware bits; a refused one caches nothing.
    [Simplified: permissions come from the leaf entry alone, and no reserved-bit faults.]
    """
    if not is_canonical(vaddr):
        return Access(Outcome.GENERAL_PROTECTION)
    tlb = m.cpus[cpu]
    vpage = vpage_of(vaddr)
    cached = tlb.entries.get(vpage)
    if cached is not None:
        if not permits(cached.flags, vaddr, write, exec_):
            del tlb.entries[vpage]
            return Access(Outcome.PAGE_FAULT, error_code=fault_code(True, vaddr, write, exec_))
        if not write or cached.flags & _PAGE_DIRTY:
            return Access(Outcome.HIT, cached.pfn, cached.flags)
        del tlb.entries[vpage]  # the store re-walks to set DIRTY
    pte = tables.lookup(tlb.loaded_mm, vaddr)
    if not permits(pte, vaddr, write, exec_):
        present = bool(pte & _PAGE_PRESENT)
        return Access(Outcome.PAGE_FAULT, error_code=fault_code(present, vaddr, write, exec_))
    bits = _PAGE_ACCESSED | (_PAGE_DIRTY if write else 0)
    if pte & bits != bits:
        tables.mark(tlb.loaded_mm, vaddr, bits)
    flags = (pte | bits) & TLB_ENTRY_FLAGS
    tlb.entries[vpage] = TlbEntry(vpage=vpage, pfn=pte_pfn(pte), flags=flags, mm=tlb.loaded_mm)
    return Access(Outcome.FILL, pte_pfn(pte), flags)


# ---------------------------------------------------------------------------------------------
# Context switches [4.6: arch/x86/include/asm/mmu_context.h]
# ---------------------------------------------------------------------------------------------


def leave_mm(m: Machine, cpu: int) -> None:
    """[4.6: arch/x86/mm/tlb.c leave_mm] a lazy CPU stops taking flushes for its borrowed mm:
    out of the mask, and swapper_pg_dir into CR3 so nothing of the mm stays cached."""
    tlb = m.cpus[cpu]
    assert tlb.state is TlbState.LAZY, "leave_mm on a CPU in TLBSTATE_OK is a BUG() in 4.6"
    mask = m.cpumask(tlb.active_mm) if tlb.active_mm != INIT_MM else set()
    if cpu in mask:
        mask.discard(cpu)
        load_cr3(m, cpu, INIT_MM)


def switch_mm(m: Machine, cpu: int, next_mm: int) -> None:
    """[4.6: switch_mm] prev is the CPU's active_mm (the borrowed one after a kernel thread).

    A different mm: join next's mask, load its tables, leave prev's mask.  The same mm (back
    from a kernel thread): if leave_mm took the CPU out of the mask meanwhile, flush IPIs
    were not delivered, so rejoin and reload CR3; otherwise nothing was missed.
    """
    tlb = m.cpus[cpu]
    prev = tlb.active_mm
    if prev != next_mm:
        tlb.state = TlbState.OK
        tlb.active_mm = next_mm
        m.cpumask(next_mm).add(cpu)
        load_cr3(m, cpu, next_mm)
        if prev != INIT_MM:
            m.cpumask(prev).discard(cpu)
    else:
        tlb.state = TlbState.OK
        if cpu not in m.cpumask(next_mm):
            m.cpumask(next_mm).add(cpu)
            load_cr3(m, cpu, next_mm)


def enter_lazy_tlb(m: Machine, cpu: int) -> None:
    """[4.6: enter_lazy_tlb] a kernel thread keeps the previous mm loaded and in the mask."""
    tlb = m.cpus[cpu]
    if tlb.state is TlbState.OK:
        tlb.state = TlbState.LAZY


# ---------------------------------------------------------------------------------------------
# Flushes [4.6: arch/x86/mm/tlb.c]
# ---------------------------------------------------------------------------------------------


def flush_tlb_func(m: Machine, cpu: int, flush_mm: int, start: int, end: int) -> None:
    """[4.6: flush_tlb_func] the IPI handler: ignore another mm's flush; a lazy CPU leaves
    the mm instead of flushing; otherwise flush all or page by page (no ceiling here)."""
    tlb = m.cpus[cpu]
    tlb.irq_tlb_count += 1
    if flush_mm != tlb.active_mm:
        return
    m.count_vm_tlb_event("nr_tlb_remote_flush_received")
    if tlb.state is TlbState.OK:
        if end == TLB_FLUSH_ALL:
            local_flush_tlb(m, cpu)
        else:
            addr = start
            while addr < end:
                __flush_tlb_single(m, cpu, addr)
                addr += PAGE_SIZE
    else:
        leave_mm(m, cpu)


def native_flush_tlb_others(m: Machine, sender: int, cpumask: set[int], mm: int, start: int,
                            end: int) -> None:
    """[4.6: native_flush_tlb_others] IPI every CPU of the mask but the sender, and wait.
    An ``end`` of 0 means the single page at ``start`` (flush_tlb_page's call)."""
    if end == 0:
        end = (start + PAGE_SIZE) & ULONG_MASK
    m.count_vm_tlb_event("nr_tlb_remote_flush")
    for cpu in sorted(cpumask - {sender}):
        flush_tlb_func(m, cpu, mm, start, end)


def others_in_mask(m: Machine, mm: int, cpu: int) -> bool:
    """[4.6: cpumask_any_but(mm_cpumask(mm), cpu) < nr_cpu_ids]"""
    return bool(m.cpumask(mm) - {cpu})


def flush_tlb_mm_range(m: Machine, cpu: int, mm: int, start: int, end: int,
                       vmflag: int) -> None:
    """[4.6: flush_tlb_mm_range] flush locally if this CPU runs mm (a lazy CPU leaves it
    instead), then send the others the range, or everything when the local flush was full.

    The local decision: everything when end is TLB_FLUSH_ALL or the vma is hugetlb, else
    ``(end - start) >> PAGE_SHIFT`` pages computed in unsigned arithmetic; more than
    tlb_single_page_flush_ceiling pages reload CR3, fewer are INVLPG'd one by one.  When this
    CPU does not run mm, or is lazy, the "everything" default is never narrowed, so the other
    CPUs flush all of mm whatever range was asked for.
    """
    tlb = m.cpus[cpu]
    full = True
    if tlb.active_mm == mm:
        if tlb.state is not TlbState.OK:
            leave_mm(m, cpu)
        else:
            pages = None
            if end != TLB_FLUSH_ALL and not vmflag & VM_HUGETLB:
                pages = ((end - start) & ULONG_MASK) >> 12
            if pages is None or pages > TLB_SINGLE_PAGE_FLUSH_CEILING:
                m.count_vm_tlb_event("nr_tlb_local_flush_all")
                local_flush_tlb(m, cpu)
            else:
                full = False
                addr = start
                while addr < end:
                    m.count_vm_tlb_event("nr_tlb_local_flush_one")
                    __flush_tlb_single(m, cpu, addr)
                    addr += PAGE_SIZE
    if full:
        start, end = 0, TLB_FLUSH_ALL
    if others_in_mask(m, mm, cpu):
        native_flush_tlb_others(m, cpu, m.cpumask(mm), mm, start, end)


def flush_tlb_page(m: Machine, cpu: int, mm: int, start: int) -> None:
    """[4.6: flush_tlb_page] INVLPG here if this CPU runs mm (leave_mm if lazy), then the
    same page on every other CPU of the mask."""
    tlb = m.cpus[cpu]
    if tlb.active_mm == mm:
        if tlb.state is TlbState.OK:
            m.count_vm_tlb_event("nr_tlb_local_flush_one")  # __flush_tlb_one
            __flush_tlb_single(m, cpu, start)
        else:
            leave_mm(m, cpu)
    if others_in_mask(m, mm, cpu):
        native_flush_tlb_others(m, cpu, m.cpumask(mm), mm, start, 0)


def do_flush_tlb_all(m: Machine, cpu: int) -> None:
    """[4.6: do_flush_tlb_all] everything including global entries; a lazy CPU also leaves
    its borrowed mm."""
    m.count_vm_tlb_event("nr_tlb_remote_flush_received")
    __flush_tlb_all(m, cpu)
    if m.cpus[cpu].state is TlbState.LAZY:
        leave_mm(m, cpu)


def flush_tlb_all(m: Machine) -> None:
    """[4.6: flush_tlb_all] on_each_cpu, the caller included."""
    m.count_vm_tlb_event("nr_tlb_remote_flush")
    for cpu in range(len(m.cpus)):
        do_flush_tlb_all(m, cpu)


def do_kernel_range_flush(m: Machine, cpu: int, start: int, end: int) -> None:
    """[4.6: do_kernel_range_flush] INVLPG each page (counted nowhere)."""
    addr = start
    while addr < end:
        __flush_tlb_single(m, cpu, addr)
        addr += PAGE_SIZE


def flush_tlb_kernel_range(m: Machine, start: int, end: int) -> None:
    """[4.6: flush_tlb_kernel_range] every CPU: everything when end is TLB_FLUSH_ALL or the
    range is more than tlb_single_page_flush_ceiling pages of bytes, else page by page."""
    if end == TLB_FLUSH_ALL or (end - start) & ULONG_MASK > (
            TLB_SINGLE_PAGE_FLUSH_CEILING * PAGE_SIZE):
        for cpu in range(len(m.cpus)):
            do_flush_tlb_all(m, cpu)
    else:
        for cpu in range(len(m.cpus)):
            do_kernel_range_flush(m, cpu, start, end)


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------


def tlb_view(m: Machine) -> TlbView:
    """The snapshot the checkers read."""
    cpus = tuple(CpuTlbView(cpu=i, active_mm=c.active_mm, loaded_mm=c.loaded_mm,
                            lazy=c.state is TlbState.LAZY,
                            entries=tuple(c.entries[v] for v in sorted(c.entries)),
                            irq_tlb_count=c.irq_tlb_count)
                 for i, c in enumerate(m.cpus))
    masks = tuple((mm, tuple(sorted(cpus_))) for mm, cpus_ in sorted(m.mm_cpumask.items())
                  if cpus_)
    return TlbView(nr_cpus=len(m.cpus), cpus=cpus, mm_cpumask=masks,
                   events=TlbEvents(**m.events))


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


def _bad_address(*values: int) -> bool:
    return any(not 0 <= v <= ULONG_MASK for v in values)


class RefTlb:
    """``specs.tlb.Tlb`` over the functions above: argument checks (TLB-R1), then 4.6."""

    capabilities: frozenset[Capability] = ALL_CAPABILITIES

    def __init__(self, config: MachineConfig, tables: TranslationSource | None = None) -> None:
        self.config = config
        self.tables: TranslationSource = NoTables() if tables is None else tables
        self.m = Machine(cpus=[CpuTlb() for _ in range(config.nr_cpus)])

    def _bad_cpu(self, cpu: int) -> bool:
        return not 0 <= cpu < self.config.nr_cpus

    def switch_mm(self, cpu: int, mm: int) -> int:
        """Context switch on cpu to a user task of mm."""
        if self._bad_cpu(cpu) or mm <= INIT_MM:
            return EINVAL
        switch_mm(self.m, cpu, mm)
        return 0

    def enter_lazy_tlb(self, cpu: int) -> int:
        """Context switch on cpu to a kernel thread."""
        if self._bad_cpu(cpu):
            return EINVAL
        enter_lazy_tlb(self.m, cpu)
        return 0

    def access(self, cpu: int, vaddr: int, write: bool = False,
               exec: bool = False) -> Access | int:
        """One access from cpu."""
        if self._bad_cpu(cpu) or _bad_address(vaddr):
            return EINVAL
        return mmu_access(self.m, self.tables, cpu, vaddr, bool(write), bool(exec))

    def flush_tlb_mm_range(self, cpu: int, mm: int, start: int, end: int,
                           vmflag: int = 0) -> int:
        """flush_tlb_mm (end = TLB_FLUSH_ALL) and flush_tlb_range, as called from cpu."""
        if self._bad_cpu(cpu) or mm <= INIT_MM or _bad_address(start, end, vmflag):
            return EINVAL
        flush_tlb_mm_range(self.m, cpu, mm, start, end, vmflag)
        return 0

    def flush_tlb_page(self, cpu: int, mm: int, vaddr: int) -> int:
        """flush_tlb_page, as called from cpu."""
        if self._bad_cpu(cpu) or mm <= INIT_MM or _bad_address(vaddr):
            return EINVAL
        flush_tlb_page(self.m, cpu, mm, vaddr)
        return 0

    def flush_tlb_all(self, cpu: int) -> int:
        """flush_tlb_all, as called from cpu."""
        if self._bad_cpu(cpu):
            return EINVAL
        flush_tlb_all(self.m)
        return 0

    def flush_tlb_kernel_range(self, cpu: int, start: int, end: int) -> int:
        """flush_tlb_kernel_range, as called from cpu."""
        if self._bad_cpu(cpu) or _bad_address(start, end):
            return EINVAL
        flush_tlb_kernel_range(self.m, start, end)
        return 0

    def view(self) -> TlbView:
        """A snapshot of every CPU and mask."""
        return tlb_view(self.m)


# ---------------------------------------------------------------------------------------------
# A table source for tests and the state machine
# ---------------------------------------------------------------------------------------------


@attrs.define
class DictTables:
    """Leaf entries in dicts: (mm, vpage) for the user half, vpage for the shared kernel half.

    It is not a page table (no levels, no table pages); it answers what the MMU asks.
    """

    user: dict[tuple[int, int], int] = attrs.field(factory=dict)
    kernel: dict[int, int] = attrs.field(factory=dict)

    def lookup(self, mm: int, vaddr: int) -> int:
        """The leaf entry (0 when none)."""
        vpage = vpage_of(vaddr)
        if is_kernel_address(vaddr):
            return self.kernel.get(vpage, 0)
        return 0 if mm == INIT_MM else self.user.get((mm, vpage), 0)

    def mark(self, mm: int, vaddr: int, bits: int) -> None:
        """Set ACCESSED/DIRTY in a present entry, as the page walker does."""
        pte = self.lookup(mm, vaddr)
        if pte & _PAGE_PRESENT:
            self.set_pte(mm, vaddr, pte | (bits & (_PAGE_ACCESSED | _PAGE_DIRTY)))

    def set_pte(self, mm: int, vaddr: int, pte: int) -> None:
        """set_pte_at, or pte_clear when pte is 0 (init_mm has no user half: ignored)."""
        vpage = vpage_of(vaddr)
        if is_kernel_address(vaddr):
            if pte:
                self.kernel[vpage] = pte
            else:
                self.kernel.pop(vpage, None)
        elif mm != INIT_MM:
            if pte:
                self.user[(mm, vpage)] = pte
            else:
                self.user.pop((mm, vpage), None)

    def drop_mm(self, mm: int) -> None:
        """Every user entry of mm cleared (exit_mmap's unmap)."""
        for key in [k for k in self.user if k[0] == mm]:
            del self.user[key]

    def view(self) -> TableView:
        """A frozen copy for the checkers."""
        return TableView(user=dict(self.user), kernel=dict(self.kernel))

    def copy(self) -> DictTables:
        """An independent copy (each model in lockstep marks its own tables)."""
        return DictTables(user=dict(self.user), kernel=dict(self.kernel))


__all__ = ["DictTables", "RefTlb", "TlbState"]
