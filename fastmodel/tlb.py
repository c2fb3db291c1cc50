"""A faster TLB model, observably identical to ``refmodel.tlb`` (lockstep-tested).

Where the reference model is written to be read beside ``arch/x86/mm/tlb.c``, this one is
laid out for the hot paths: each CPU keeps its entries as plain tuples in a dict and, beside
them, the set of pages whose entries are global, so a CR3 load costs O(global entries)
instead of O(entries); mm_cpumask is an int bitmask per mm; the permission test of an access
is one mask comparison.  Views are built only when asked for.  Nothing here is numpy: a TLB
is a sparse map with constant-time probes, which dicts already are.
"""

from __future__ import annotations

from typing import Final

from specs.errno import Errno
from specs.machine import MachineConfig
from specs.pte import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_GLOBAL,
    _PAGE_NX,
    _PAGE_PRESENT,
    _PAGE_RW,
    _PAGE_USER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PTE_PFN_MASK,
)
from specs.tlb import (
    ALL_CAPABILITIES,
    INIT_MM,
    KERNEL_HALF,
    PF_INSTR,
    PF_PROT,
    PF_USER,
    PF_WRITE,
    TLB_ENTRY_FLAGS,
    TLB_FLUSH_ALL,
    TLB_SINGLE_PAGE_FLUSH_CEILING,
    ULONG_MASK,
    USER_HALF_END,
    VM_HUGETLB,
    Access,
    Capability,
    CpuTlbView,
    NoTables,
    Outcome,
    TlbEntry,
    TlbEvents,
    TlbView,
    TranslationSource,
)

EINVAL: Final = -Errno.EINVAL
REMOTE, RECEIVED, LOCAL_ALL, LOCAL_ONE = range(4)
CEILING_BYTES: Final = TLB_SINGLE_PAGE_FLUSH_CEILING * PAGE_SIZE

Entry = tuple[int, int, int]  # (pfn, hardware flags, mm filled from)


class FastTlb:
    """``specs.tlb.Tlb`` with flat per-CPU state."""

    capabilities: frozenset[Capability] = ALL_CAPABILITIES

    def __init__(self, config: MachineConfig, tables: TranslationSource | None = None) -> None:
        self.config = config
        self.tables: TranslationSource = NoTables() if tables is None else tables
        n = config.nr_cpus
        self.entries: list[dict[int, Entry]] = [{} for _ in range(n)]
        self.globals: list[set[int]] = [set() for _ in range(n)]
        self.active = [INIT_MM] * n
        self.loaded = [INIT_MM] * n
        self.lazy = [True] * n
        self.irqs = [0] * n
        self.masks: dict[int, int] = {}
        self.events = [0, 0, 0, 0]

    # -- primitives ------------------------------------------------------------------------------

    def _cr3(self, cpu: int, mm: int) -> None:
        keep = self.globals[cpu]
        old = self.entries[cpu]
        self.entries[cpu] = {v: old[v] for v in keep}
        self.loaded[cpu] = mm

    def _invlpg(self, cpu: int, addr: int) -> None:
        vpage = addr >> PAGE_SHIFT
        if self.entries[cpu].pop(vpage, None) is not None:
            self.globals[cpu].discard(vpage)

    def _invlpg_range(self, cpu: int, start: int, end: int) -> None:
        if start >= end:
            return
        entries = self.entries[cpu]
        if not entries:
            return
        first = start >> PAGE_SHIFT
        count = (end - start + PAGE_SIZE - 1) >> PAGE_SHIFT
        glob = self.globals[cpu]
        if count < len(entries):
            for vpage in range(first, first + count):
                if entries.pop(vpage, None) is not None:
                    glob.discard(vpage)
        else:
            for vpage in [v for v in entries if first <= v < first + count]:
                del entries[vpage]
                glob.discard(vpage)

    def _flush_everything(self, cpu: int) -> None:
        self.entries[cpu] = {}
        self.globals[cpu] = set()

    def _leave_mm(self, cpu: int) -> None:
        mm = self.active[cpu]
        bit = 1 << cpu
        mask = self.masks.get(mm, 0)
        if mm != INIT_MM and mask & bit:
            self.masks[mm] = mask & ~bit
            self._cr3(cpu, INIT_MM)

    def _others(self, mm: int, sender: int, start: int, end: int) -> None:
        if end == 0:
            end = (start + PAGE_SIZE) & ULONG_MASK
        self.events[REMOTE] += 1
        mask = self.masks.get(mm, 0) & ~(1 << sender)
        cpu = 0
        while mask:
            if mask & 1:
                self.irqs[cpu] += 1
                if self.active[cpu] == mm:
                    self.events[RECEIVED] += 1
                    if self.lazy[cpu]:
                        self._leave_mm(cpu)
                    elif end == TLB_FLUSH_ALL:
                        self._cr3(cpu, self.loaded[cpu])
                    else:
                        self._invlpg_range(cpu, start, end)
            mask >>= 1
            cpu += 1

    def _bad(self, cpu: int, *addresses: int) -> bool:
        if not 0 <= cpu < self.config.nr_cpus:
            return True
        return any(not 0 <= a <= ULONG_MASK for a in addresses)

    # -- the contract ----------------------------------------------------------------------------

    def switch_mm(self, cpu: int, mm: int) -> int:
        """Context switch on cpu to a user task of mm."""
        if self._bad(cpu) or mm <= INIT_MM:
            return EINVAL
        prev = self.active[cpu]
        bit = 1 << cpu
        self.lazy[cpu] = False
        if prev != mm:
            self.active[cpu] = mm
            self.masks[mm] = self.masks.get(mm, 0) | bit
            self._cr3(cpu, mm)
            if prev != INIT_MM:
                self.masks[prev] = self.masks.get(prev, 0) & ~bit
        elif not self.masks.get(mm, 0) & bit:
            self.masks[mm] = self.masks.get(mm, 0) | bit
            self._cr3(cpu, mm)
        return 0

    def enter_lazy_tlb(self, cpu: int) -> int:
        """Context switch on cpu to a kernel thread."""
        if self._bad(cpu):
            return EINVAL
        self.lazy[cpu] = True
        return 0

    def access(self, cpu: int, vaddr: int, write: bool = False,
               exec: bool = False) -> Access | int:
        """One access from cpu (see refmodel.tlb.mmu_access for the rules)."""
        if self._bad(cpu, vaddr):
            return EINVAL
        kernel = vaddr >= KERNEL_HALF
        if not kernel and vaddr >= USER_HALF_END:
            return Access(Outcome.GENERAL_PROTECTION)
        need = _PAGE_PRESENT | (0 if kernel else _PAGE_USER) | (_PAGE_RW if write else 0)
        vpage = vaddr >> PAGE_SHIFT
        entries = self.entries[cpu]
        cached = entries.get(vpage)
        if cached is not None:
            flags = cached[1]
            if flags & need != need or (exec and flags & _PAGE_NX):
                del entries[vpage]
                self.globals[cpu].discard(vpage)
                return Access(Outcome.PAGE_FAULT, error_code=_code(True, kernel, write, exec))
            if not write or flags & _PAGE_DIRTY:
                return Access(Outcome.HIT, cached[0], flags)
            del entries[vpage]
            self.globals[cpu].discard(vpage)
        mm = self.loaded[cpu]
        pte = self.tables.lookup(mm, vaddr)
        if pte & need != need or (exec and pte & _PAGE_NX):
            return Access(Outcome.PAGE_FAULT,
                          error_code=_code(bool(pte & _PAGE_PRESENT), kernel, write, exec))
        bits = _PAGE_ACCESSED | _PAGE_DIRTY if write else _PAGE_ACCESSED
        if pte & bits != bits:
            self.tables.mark(mm, vaddr, bits)
        flags = (pte | bits) & TLB_ENTRY_FLAGS
        pfn = (pte & PTE_PFN_MASK) >> PAGE_SHIFT
        entries[vpage] = (pfn, flags, mm)
        if flags & _PAGE_GLOBAL:
            self.globals[cpu].add(vpage)
        return Access(Outcome.FILL, pfn, flags)

    def flush_tlb_mm_range(self, cpu: int, mm: int, start: int, end: int,
                           vmflag: int = 0) -> int:
        """flush_tlb_mm (end = TLB_FLUSH_ALL) and flush_tlb_range, as called from cpu."""
        if self._bad(cpu, start, end, vmflag) or mm <= INIT_MM:
            return EINVAL
        full = True
        if self.active[cpu] == mm:
            if self.lazy[cpu]:
                self._leave_mm(cpu)
            elif (end == TLB_FLUSH_ALL or vmflag & VM_HUGETLB
                  or ((end - start) & ULONG_MASK) >> PAGE_SHIFT > TLB_SINGLE_PAGE_FLUSH_CEILING):
                self.events[LOCAL_ALL] += 1
                self._cr3(cpu, self.loaded[cpu])
            else:
                full = False
                if end > start:
                    self.events[LOCAL_ONE] += (end - start + PAGE_SIZE - 1) >> PAGE_SHIFT
                self._invlpg_range(cpu, start, end)
        if full:
            start, end = 0, TLB_FLUSH_ALL
        if self.masks.get(mm, 0) & ~(1 << cpu):
            self._others(mm, cpu, start, end)
        return 0

    def flush_tlb_page(self, cpu: int, mm: int, vaddr: int) -> int:
        """flush_tlb_page, as called from cpu."""
        if self._bad(cpu, vaddr) or mm <= INIT_MM:
            return EINVAL
        if self.active[cpu] == mm:
            if self.lazy[cpu]:
                self._leave_mm(cpu)
            else:
                self.events[LOCAL_ONE] += 1
                self._invlpg(cpu, vaddr)
        if self.masks.get(mm, 0) & ~(1 << cpu):
            self._others(mm, cpu, vaddr, 0)
        return 0

    def _all_cpus_flush_everything(self) -> None:
        for cpu in range(self.config.nr_cpus):
            self.events[RECEIVED] += 1
            self._flush_everything(cpu)
            if self.lazy[cpu]:
                self._leave_mm(cpu)

    def flush_tlb_all(self, cpu: int) -> int:
        """flush_tlb_all, as called from cpu."""
        if self._bad(cpu):
            return EINVAL
        self.events[REMOTE] += 1
        self._all_cpus_flush_everything()
        return 0

    def flush_tlb_kernel_range(self, cpu: int, start: int, end: int) -> int:
        """flush_tlb_kernel_range, as called from cpu."""
        if self._bad(cpu, start, end):
            return EINVAL
        if end == TLB_FLUSH_ALL or (end - start) & ULONG_MASK > CEILING_BYTES:
            self._all_cpus_flush_everything()
        else:
            for other in range(self.config.nr_cpus):
                self._invlpg_range(other, start, end)
        return 0

    def view(self) -> TlbView:
        """A snapshot of every CPU and mask."""
        cpus = tuple(
            CpuTlbView(cpu=cpu, active_mm=self.active[cpu], loaded_mm=self.loaded[cpu],
                       lazy=self.lazy[cpu],
                       entries=tuple(TlbEntry(v, e[0], e[1], e[2])
                                     for v, e in sorted(self.entries[cpu].items())),
                       irq_tlb_count=self.irqs[cpu])
            for cpu in range(self.config.nr_cpus))
        masks = tuple((mm, tuple(c for c in range(self.config.nr_cpus) if bits >> c & 1))
                      for mm, bits in sorted(self.masks.items()) if bits)
        return TlbView(nr_cpus=self.config.nr_cpus, cpus=cpus, mm_cpumask=masks,
                       events=TlbEvents(*self.events))


def _code(present: bool, kernel: bool, write: bool, exec_: bool) -> int:
    """The x86 page-fault error code."""
    return ((PF_PROT if present else 0) | (PF_WRITE if write else 0)
            | (0 if kernel else PF_USER) | (PF_INSTR if exec_ else 0))
