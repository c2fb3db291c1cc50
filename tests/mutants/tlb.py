"""Deliberately broken TLB models: at least one per TLB check ID.

Each mutant is :class:`refmodel.tlb.RefTlb` with one ``refmodel.tlb`` function swapped for a
broken copy while each contract operation runs (the original is restored afterwards), or with
one adapter method overridden.  The changed line carries ``# MUTATION:``.  ``target`` names the
check that must catch it in contract mode with only that check enabled
(``tests/test_mutants.py``); ``subsystem`` tells vmconform the class is a TLB factory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from refmodel import tlb as rt
from refmodel.tlb import CpuTlb, Machine, RefTlb, TlbState
from specs.pte import _PAGE_ACCESSED, _PAGE_DIRTY, PAGE_SIZE
from specs.tlb import (
    INIT_MM,
    TLB_ENTRY_FLAGS,
    TLB_FLUSH_ALL,
    TLB_SINGLE_PAGE_FLUSH_CEILING,
    ULONG_MASK,
    VM_HUGETLB,
    Access,
    Outcome,
    TlbEntry,
    TranslationSource,
    fault_code,
    is_canonical,
    permits,
    pte_pfn,
    vpage_of,
)
from tests.mutants import PatchedOperations, swapped

OPS = ("switch_mm", "enter_lazy_tlb", "access", "flush_tlb_mm_range", "flush_tlb_page",
       "flush_tlb_all", "flush_tlb_kernel_range")


class MutantTlb(PatchedOperations, RefTlb):
    """RefTlb with some ``refmodel.tlb`` functions replaced while each operation runs."""

    target: ClassVar[str] = ""
    subsystem: ClassVar[str] = "tlb"
    #: refmodel.tlb global name -> the broken copy used instead
    patches: ClassVar[Mapping[str, Callable[..., Any]]] = {}

    operations: ClassVar[tuple[str, ...]] = OPS

    def _patched(self) -> contextlib.AbstractContextManager[None]:
        return swapped({(rt, name): broken for name, broken in self.patches.items()})


# ---------------------------------------------------------------------------------------------
# Broken copies of refmodel.tlb functions
# ---------------------------------------------------------------------------------------------


def _others_never_sent(m: Machine, sender: int, cpumask: set[int], mm: int, start: int,
                       end: int) -> None:
    """native_flush_tlb_others that counts the IPI but sends it nowhere."""
    m.count_vm_tlb_event("nr_tlb_remote_flush")
    # MUTATION: the loop over the other CPUs of the mask is gone


def _range_short_by_one(m: Machine, cpu: int, mm: int, start: int, end: int,
                        vmflag: int) -> None:
    """flush_tlb_mm_range whose INVLPG loop stops one page early (here and remotely)."""
    tlb = m.cpus[cpu]
    full = True
    if tlb.active_mm == mm:
        if tlb.state is not TlbState.OK:
            rt.leave_mm(m, cpu)
        else:
            pages = None
            if end != TLB_FLUSH_ALL and not vmflag & VM_HUGETLB:
                pages = ((end - start) & ULONG_MASK) >> 12
            if pages is None or pages > TLB_SINGLE_PAGE_FLUSH_CEILING:
                rt.local_flush_tlb(m, cpu)
            else:
                full = False
                addr = start
                while addr < end - PAGE_SIZE:  # MUTATION: misses the last page
                    rt.__dict__["__flush_tlb_single"](m, cpu, addr)
                    addr += PAGE_SIZE
    if full:
        start, end = 0, TLB_FLUSH_ALL
    if rt.others_in_mask(m, mm, cpu):
        rt.native_flush_tlb_others(m, cpu, m.cpumask(mm), mm, start, end - (
            0 if full else PAGE_SIZE))  # MUTATION: the IPI carries the short range too


def _ceiling_off_by_one(m: Machine, cpu: int, mm: int, start: int, end: int,
                        vmflag: int) -> None:
    """flush_tlb_mm_range that reloads CR3 at exactly tlb_single_page_flush_ceiling pages."""
    tlb = m.cpus[cpu]
    full = True
    if tlb.active_mm == mm:
        if tlb.state is not TlbState.OK:
            rt.leave_mm(m, cpu)
        else:
            pages = None
            if end != TLB_FLUSH_ALL and not vmflag & VM_HUGETLB:
                pages = ((end - start) & ULONG_MASK) >> 12
            if pages is None or pages >= TLB_SINGLE_PAGE_FLUSH_CEILING:  # MUTATION: >= not >
                m.count_vm_tlb_event("nr_tlb_local_flush_all")
                rt.local_flush_tlb(m, cpu)
            else:
                full = False
                addr = start
                while addr < end:
                    m.count_vm_tlb_event("nr_tlb_local_flush_one")
                    rt.__dict__["__flush_tlb_single"](m, cpu, addr)
                    addr += PAGE_SIZE
    if full:
        start, end = 0, TLB_FLUSH_ALL
    if rt.others_in_mask(m, mm, cpu):
        rt.native_flush_tlb_others(m, cpu, m.cpumask(mm), mm, start, end)


def _switch_back_without_reload(m: Machine, cpu: int, next_mm: int) -> None:
    """switch_mm that rejoins the mask after leave_mm but never reloads CR3."""
    tlb = m.cpus[cpu]
    prev = tlb.active_mm
    if prev != next_mm:
        tlb.state = TlbState.OK
        tlb.active_mm = next_mm
        m.cpumask(next_mm).add(cpu)
        rt.load_cr3(m, cpu, next_mm)
        if prev != INIT_MM:
            m.cpumask(prev).discard(cpu)
    else:
        tlb.state = TlbState.OK
        if cpu not in m.cpumask(next_mm):
            m.cpumask(next_mm).add(cpu)
            # MUTATION: no load_cr3(next): swapper_pg_dir stays loaded


def _leave_mm_keeps_tables(m: Machine, cpu: int) -> None:
    """leave_mm that leaves the mask but keeps the mm's tables (and entries) loaded."""
    tlb = m.cpus[cpu]
    mask = m.cpumask(tlb.active_mm) if tlb.active_mm != INIT_MM else set()
    if cpu in mask:
        mask.discard(cpu)
        # MUTATION: no load_cr3(swapper_pg_dir)


def _switch_keeps_entries(m: Machine, cpu: int, next_mm: int) -> None:
    """switch_mm whose CR3 write to another mm keeps every cached entry."""
    tlb = m.cpus[cpu]
    prev = tlb.active_mm
    if prev != next_mm:
        tlb.state = TlbState.OK
        tlb.active_mm = next_mm
        m.cpumask(next_mm).add(cpu)
        tlb.loaded_mm = next_mm  # MUTATION: CR3 changes but non-global entries stay
        if prev != INIT_MM:
            m.cpumask(prev).discard(cpu)
    else:
        tlb.state = TlbState.OK
        if cpu not in m.cpumask(next_mm):
            m.cpumask(next_mm).add(cpu)
            rt.load_cr3(m, cpu, next_mm)


def _switch_drops_globals(m: Machine, cpu: int, next_mm: int) -> None:
    """switch_mm whose CR3 write to another mm also drops global entries."""
    tlb = m.cpus[cpu]
    prev = tlb.active_mm
    if prev != next_mm:
        tlb.state = TlbState.OK
        tlb.active_mm = next_mm
        m.cpumask(next_mm).add(cpu)
        rt.load_cr3(m, cpu, next_mm)
        tlb.entries.clear()  # MUTATION: kernel (global) entries go as well
        if prev != INIT_MM:
            m.cpumask(prev).discard(cpu)
    else:
        tlb.state = TlbState.OK
        if cpu not in m.cpumask(next_mm):
            m.cpumask(next_mm).add(cpu)
            rt.load_cr3(m, cpu, next_mm)


def _lazy_never_entered(m: Machine, cpu: int) -> None:
    """enter_lazy_tlb that leaves cpu_tlbstate at TLBSTATE_OK."""
    # MUTATION: the state change is gone (as if built without CONFIG_SMP)


def _fill(m: Machine, tables: TranslationSource, cpu: int, vaddr: int, write: bool,
          exec_: bool, mark_bits: int | None, keep_all_bits: bool) -> Access:
    """mmu_access with the walk's marking and caching bits as parameters (the helper of the
    two fill mutants below; with mark_bits None and keep_all_bits False it is refmodel's)."""
    if not is_canonical(vaddr):
        return Access(Outcome.GENERAL_PROTECTION)
    tlb: CpuTlb = m.cpus[cpu]
    vpage = vpage_of(vaddr)
    cached = tlb.entries.get(vpage)
    if cached is not None:
        if not permits(cached.flags, vaddr, write, exec_):
            del tlb.entries[vpage]
            return Access(Outcome.PAGE_FAULT, error_code=fault_code(True, vaddr, write, exec_))
        if not write or cached.flags & _PAGE_DIRTY:
            return Access(Outcome.HIT, cached.pfn, cached.flags)
        del tlb.entries[vpage]
    pte = tables.lookup(tlb.loaded_mm, vaddr)
    if not permits(pte, vaddr, write, exec_):
        return Access(Outcome.PAGE_FAULT,
                      error_code=fault_code(bool(pte & 1), vaddr, write, exec_))
    bits = _PAGE_ACCESSED | (_PAGE_DIRTY if write else 0)
    tables.mark(tlb.loaded_mm, vaddr, bits if mark_bits is None else mark_bits)
    flags = (pte | bits) & (0xFFFFFFFFFFFFFFFF if keep_all_bits else TLB_ENTRY_FLAGS)
    tlb.entries[vpage] = TlbEntry(vpage=vpage, pfn=pte_pfn(pte), flags=flags, mm=tlb.loaded_mm)
    return Access(Outcome.FILL, pte_pfn(pte), flags)


def _fault_keeps_entry(m: Machine, tables: TranslationSource, cpu: int, vaddr: int,
                       write: bool, exec_: bool) -> Access:
    """mmu_access whose protection fault leaves the refusing entry cached."""
    tlb: CpuTlb = m.cpus[cpu]
    cached = tlb.entries.get(vpage_of(vaddr)) if is_canonical(vaddr) else None
    if cached is not None and not permits(cached.flags, vaddr, write, exec_):
        # MUTATION: no del tlb.entries[vpage]: every retry faults on the stale entry
        return Access(Outcome.PAGE_FAULT, error_code=fault_code(True, vaddr, write, exec_))
    return _fill(m, tables, cpu, vaddr, write, exec_, mark_bits=None, keep_all_bits=False)


def _fill_without_dirty(m: Machine, tables: TranslationSource, cpu: int, vaddr: int,
                        write: bool, exec_: bool) -> Access:
    """A walk that sets ACCESSED but never DIRTY in the table."""
    return _fill(m, tables, cpu, vaddr, write, exec_,
                 mark_bits=_PAGE_ACCESSED,  # MUTATION: DIRTY is not written back on a store
                 keep_all_bits=False)


def _fill_keeps_software_bits(m: Machine, tables: TranslationSource, cpu: int, vaddr: int,
                              write: bool, exec_: bool) -> Access:
    """A fill that caches the whole flag half of the PTE, software bits included."""
    return _fill(m, tables, cpu, vaddr, write, exec_, mark_bits=None,
                 keep_all_bits=True)  # MUTATION: no & TLB_ENTRY_FLAGS


# ---------------------------------------------------------------------------------------------
# The mutants
# ---------------------------------------------------------------------------------------------


class FlushForgetsRemoteCpus(MutantTlb):
    """Flushes IPI no other CPU: remote TLBs keep entries of the flushed range."""

    target = "TLB-R5"
    patches: ClassVar = {"native_flush_tlb_others": _others_never_sent}


class RangeFlushMissesLastPage(MutantTlb):
    """flush_tlb_mm_range stops its INVLPG loop one page before the end."""

    target = "TLB-R5"
    patches: ClassVar = {"flush_tlb_mm_range": _range_short_by_one}


class CeilingOffByOne(MutantTlb):
    """A 33-page range flush reloads CR3 instead of 33 INVLPGs (>= where 4.6 has >)."""

    target = "TLB-R6"
    patches: ClassVar = {"flush_tlb_mm_range": _ceiling_off_by_one}


class LazyReturnWithoutReload(MutantTlb):
    """Returning from lazy mode after leave_mm rejoins the mask but keeps swapper_pg_dir."""

    target = "TLB-I4"
    patches: ClassVar = {"switch_mm": _switch_back_without_reload}


class LazyLeaveKeepsStaleEntries(MutantTlb):
    """leave_mm drops the CPU from the mask without loading swapper_pg_dir, so a lazy CPU
    keeps entries that later flushes never reach."""

    target = "TLB-I1"
    patches: ClassVar = {"leave_mm": _leave_mm_keeps_tables}


class Cr3LoadKeepsNonGlobal(MutantTlb):
    """A context switch to another mm keeps the previous mm's non-global entries."""

    target = "TLB-I3"
    patches: ClassVar = {"switch_mm": _switch_keeps_entries}


class SwitchDropsGlobalEntries(MutantTlb):
    """A context switch drops the kernel's global entries, which a CR3 write never does."""

    target = "TLB-R2"
    patches: ClassVar = {"switch_mm": _switch_drops_globals}


class LazyModeNeverEntered(MutantTlb):
    """enter_lazy_tlb does nothing, so a kernel thread's CPU still claims TLBSTATE_OK."""

    target = "TLB-R3"
    patches: ClassVar = {"enter_lazy_tlb": _lazy_never_entered}


class FillForgetsDirty(MutantTlb):
    """A store that walks the tables sets ACCESSED but not DIRTY in the table entry."""

    target = "TLB-R4"
    patches: ClassVar = {"mmu_access": _fill_without_dirty}


class SpuriousFaultKeepsEntry(MutantTlb):
    """A fault on a cached entry that refuses the access does not drop it, so after an
    upgrade without a flush every retry faults again."""

    target = "TLB-R4"
    patches: ClassVar = {"mmu_access": _fault_keeps_entry}


class KernelRangeSkipsRemoteCpus(RefTlb):
    """flush_tlb_kernel_range flushes the calling CPU only, as if on_each_cpu were
    local_flush."""

    target: ClassVar[str] = "TLB-R5"
    subsystem: ClassVar[str] = "tlb"

    def flush_tlb_kernel_range(self, cpu: int, start: int, end: int) -> int:
        """RefTlb.flush_tlb_kernel_range on one CPU."""
        if self._bad_cpu(cpu) or not 0 <= start <= ULONG_MASK or not 0 <= end <= ULONG_MASK:
            return rt.EINVAL
        everything = end == TLB_FLUSH_ALL or (end - start) & ULONG_MASK > (
            TLB_SINGLE_PAGE_FLUSH_CEILING * PAGE_SIZE)
        if everything:
            rt.do_flush_tlb_all(self.m, cpu)  # MUTATION: this CPU only
        else:
            rt.do_kernel_range_flush(self.m, cpu, start, end)  # MUTATION: this CPU only
        return 0


class FillCachesSoftwareBits(MutantTlb):
    """A fill caches SPECIAL, SOFT_DIRTY and the other software bits of the PTE."""

    target = "TLB-I2"
    patches: ClassVar = {"mmu_access": _fill_keeps_software_bits}


class AcceptsCpuOutOfRange(RefTlb):
    """A CPU number one past the last wraps round to CPU 0 instead of being refused."""

    target: ClassVar[str] = "TLB-R1"
    subsystem: ClassVar[str] = "tlb"

    def _bad_cpu(self, cpu: int) -> bool:
        return not 0 <= cpu <= self.config.nr_cpus  # MUTATION: <= lets nr_cpus through

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name not in OPS:
            return value
        nr_cpus = super().__getattribute__("config").nr_cpus

        def wrapped(cpu: int, *args: Any, **kwargs: Any) -> Any:
            # the accepted CPU number indexes the per-cpu state modulo nr_cpus
            return value(cpu % nr_cpus if cpu == nr_cpus else cpu, *args, **kwargs)
        return wrapped
