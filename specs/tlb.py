"""The TLB contract: the Protocol an implementation satisfies, its views, and the table source.

The normative text is ``specs/tlb.md``; the IDs used here (``TLB-…``) are defined there.  A TLB
implementation never owns page tables: it reads leaf entries through a
:class:`TranslationSource` it is given at boot (``factory(config, tables)``), exactly as the
MMU reads whatever CR3 points at.  Results are plain ints, or an :class:`Access` for
``access``, so an implementation behind ctypes needs only a thin wrapper.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, Protocol, runtime_checkable

import attrs

from specs.machine import MachineConfig
from specs.pte import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_GLOBAL,
    _PAGE_NX,
    _PAGE_PAT,
    _PAGE_PCD,
    _PAGE_PRESENT,
    _PAGE_PWT,
    _PAGE_RW,
    _PAGE_USER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PTE_PFN_MASK,
)

#: [4.6: arch/x86/include/asm/tlbflush.h] the "end" that means the whole address space.
TLB_FLUSH_ALL: Final = (1 << 64) - 1
#: [4.6: arch/x86/mm/tlb.c tlb_single_page_flush_ceiling] above this many pages a range
#: flush reloads CR3 instead of issuing one INVLPG per page (debugfs-tunable; 33 at boot).
TLB_SINGLE_PAGE_FLUSH_CEILING: Final = 33
#: [4.6: include/linux/mm.h] the vm_flags bit that makes flush_tlb_mm_range flush everything.
VM_HUGETLB: Final = 0x00400000
#: The mm id of init_mm, whose tables (swapper_pg_dir) a CPU loads in leave_mm.
INIT_MM: Final = 0

ULONG_MASK: Final = (1 << 64) - 1
#: 48-bit canonical addresses: the user half ends here, the kernel half starts at KERNEL_HALF.
USER_HALF_END: Final = 1 << 47
KERNEL_HALF: Final = ULONG_MASK + 1 - (1 << 47)

#: The entry bits the MMU interprets in a 4 KiB leaf, and so the only ones a TLB entry can
#: hold (TLB-I2).  Software bits (SPECIAL, SOFT_DIRTY, DEVMAP, ...) and PROTNONE-as-GLOBAL on
#: a non-present entry never reach a TLB.  [4.6: arch/x86/include/asm/pgtable_types.h]
TLB_ENTRY_FLAGS: Final = (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_PWT | _PAGE_PCD
                          | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_PAT | _PAGE_GLOBAL | _PAGE_NX)
#: Bits a cached entry may hold only when the table entry holds them too (TLB-I1).
GRANTING_FLAGS: Final = _PAGE_RW | _PAGE_USER | _PAGE_DIRTY | _PAGE_GLOBAL
#: Memory-type bits: a cached entry must agree with the table on every one (TLB-I1).
CACHE_FLAGS: Final = _PAGE_PWT | _PAGE_PCD | _PAGE_PAT

# x86 page-fault error code bits [4.6: arch/x86/mm/fault.c enum x86_pf_error_code]
PF_PROT: Final = 1 << 0
PF_WRITE: Final = 1 << 1
PF_USER: Final = 1 << 2
PF_RSVD: Final = 1 << 3
PF_INSTR: Final = 1 << 4


class Capability(enum.Enum):
    """Optional parts of the contract.  A check needing one an implementation lacks is
    reported as skipped, never as failed."""

    #: flushes follow 4.6's policy exactly: the 33-page ceiling, full flushes by CR3 reload,
    #: remote full flushes when the sender is not running the mm, leave_mm on lazy CPUs.
    #: Without it only the safety of a flush is checked, and lockstep is not meaningful.
    EXACT_FLUSH = "exact_flush"


ALL_CAPABILITIES: Final = frozenset(Capability)


class Outcome(enum.IntEnum):
    """What one access did."""

    HIT = 0  # translated by an entry already cached
    FILL = 1  # walked the tables and cached the translation
    PAGE_FAULT = 2  # #PF: nothing usable cached and the table does not permit it
    GENERAL_PROTECTION = 3  # #GP: a non-canonical address


@attrs.frozen
class Access:
    """The result of ``access``: the translation used, or the fault and its error code."""

    outcome: Outcome
    #: the page frame the access reached (-1 on a fault)
    pfn: int = -1
    #: the hardware bits of the translation used (0 on a fault)
    flags: int = 0
    #: the x86 page-fault error code (PF_* bits; 0 unless outcome is PAGE_FAULT)
    error_code: int = 0


@attrs.frozen(order=True)
class TlbEntry:
    """One cached translation.  The TLB is untagged (4.6 does not use PCIDs), so an entry is
    found by its page alone; ``mm`` records whose tables it was filled from."""

    vpage: int
    pfn: int
    #: hardware bits only (a subset of TLB_ENTRY_FLAGS)
    flags: int
    mm: int

    @property
    def is_global(self) -> bool:
        """A global entry survives CR3 loads; only INVLPG and a global flush remove it."""
        return bool(self.flags & _PAGE_GLOBAL)


@attrs.frozen
class CpuTlbView:
    """One CPU [4.6: per-cpu cpu_tlbstate and the TLB itself]."""

    cpu: int
    #: cpu_tlbstate.active_mm: the mm of the running task, or the one a kernel thread borrows
    active_mm: int
    #: the mm whose tables CR3 holds (INIT_MM after leave_mm loaded swapper_pg_dir)
    loaded_mm: int
    #: cpu_tlbstate.state == TLBSTATE_LAZY: a kernel thread runs on the borrowed active_mm
    lazy: bool
    #: cached translations, sorted by page
    entries: tuple[TlbEntry, ...]
    #: irq_tlb_count: flush IPIs this CPU handled (including ones for another mm)
    irq_tlb_count: int

    def entry(self, vpage: int) -> TlbEntry | None:
        """The entry for one page, if cached."""
        for entry in self.entries:
            if entry.vpage == vpage:
                return entry
        return None


@attrs.frozen
class TlbEvents:
    """[4.6: include/linux/vm_event_item.h, CONFIG_DEBUG_TLBFLUSH] the flush event counters."""

    nr_tlb_remote_flush: int = 0
    nr_tlb_remote_flush_received: int = 0
    nr_tlb_local_flush_all: int = 0
    nr_tlb_local_flush_one: int = 0


@attrs.frozen
class TlbView:
    """A snapshot of every CPU's TLB state and every mm_cpumask; never changes once taken."""

    nr_cpus: int
    cpus: tuple[CpuTlbView, ...]
    #: (mm, CPUs in mm_cpumask(mm)) for every user mm whose mask is not empty, by mm
    mm_cpumask: tuple[tuple[int, tuple[int, ...]], ...]
    events: TlbEvents

    def cpumask(self, mm: int) -> tuple[int, ...]:
        """mm_cpumask(mm) as sorted CPU numbers."""
        for owner, cpus in self.mm_cpumask:
            if owner == mm:
                return cpus
        return ()


@runtime_checkable
class TranslationSource(Protocol):
    """The page tables as the MMU sees them: one leaf entry per (mm, page).

    For a kernel-half address every mm answers alike (4.6 copies the kernel PGD slots into
    every mm, pgd_ctor), so ``lookup(INIT_MM, vaddr)`` is what any mm sees there.
    """

    def lookup(self, mm: int, vaddr: int) -> int:
        """The leaf PTE value mapping vaddr in mm's tables (0 when nothing is mapped)."""
        ...

    def mark(self, mm: int, vaddr: int, bits: int) -> None:
        """The hardware setting ACCESSED (and DIRTY) in the leaf entry during a walk."""
        ...


class NoTables:
    """A source with nothing mapped: what a TLB booted without tables walks (every access
    faults).  Factories take ``tables`` as optional so the harness can boot one just to read
    its capabilities."""

    def lookup(self, mm: int, vaddr: int) -> int:
        """Nothing is mapped."""
        return 0

    def mark(self, mm: int, vaddr: int, bits: int) -> None:
        """Nothing to mark."""


@attrs.frozen
class TableView:
    """A frozen copy of a TranslationSource's entries, for the checkers."""

    #: (mm, vpage) -> PTE for user-half pages
    user: Mapping[tuple[int, int], int]
    #: vpage -> PTE for kernel-half pages (shared by every mm)
    kernel: Mapping[int, int]

    def lookup(self, mm: int, vaddr: int) -> int:
        """As TranslationSource.lookup."""
        vpage = (vaddr & ULONG_MASK) >> PAGE_SHIFT
        if is_kernel_address(vaddr):
            return self.kernel.get(vpage, 0)
        if mm == INIT_MM:
            return 0
        return self.user.get((mm, vpage), 0)


@runtime_checkable
class Tlb(Protocol):
    """N CPUs' TLBs as 4.6's x86 code drives them.  ``cpu`` is the CPU making the call."""

    config: MachineConfig
    capabilities: frozenset[Capability]

    def switch_mm(self, cpu: int, mm: int) -> int:
        """Context switch to a user task of mm; 0 or -errno (TLB-R1, TLB-R2)."""
        ...

    def enter_lazy_tlb(self, cpu: int) -> int:
        """Context switch to a kernel thread; 0 or -errno (TLB-R1, TLB-R3)."""
        ...

    def access(self, cpu: int, vaddr: int, write: bool = False,
               exec: bool = False) -> Access | int:
        """A load, store or instruction fetch; an Access, or -errno (TLB-R1, TLB-R4)."""
        ...

    def flush_tlb_mm_range(self, cpu: int, mm: int, start: int, end: int,
                           vmflag: int = 0) -> int:
        """flush_tlb_mm (end == TLB_FLUSH_ALL) and flush_tlb_range; 0 or -errno."""
        ...

    def flush_tlb_page(self, cpu: int, mm: int, vaddr: int) -> int:
        """One page of mm, on every CPU that may cache it; 0 or -errno."""
        ...

    def flush_tlb_all(self, cpu: int) -> int:
        """Everything, global entries included, on every CPU; 0 or -errno."""
        ...

    def flush_tlb_kernel_range(self, cpu: int, start: int, end: int) -> int:
        """Kernel pages on every CPU; 0 or -errno."""
        ...

    def view(self) -> TlbView:
        """A snapshot of every CPU and mm_cpumask: cost O(cached entries)."""
        ...


class TlbFactory(Protocol):
    """``module:factory`` plug-ins are callables of this shape."""

    def __call__(self, config: MachineConfig,
                 tables: TranslationSource | None = None) -> Tlb: ...


# -- small pure helpers every layer shares ------------------------------------------------------


def is_canonical(vaddr: int) -> bool:
    """A 48-bit canonical address (bits 63..47 all equal)."""
    return 0 <= vaddr < USER_HALF_END or KERNEL_HALF <= vaddr <= ULONG_MASK


def is_kernel_address(vaddr: int) -> bool:
    """In the upper canonical half, where every mm shares init_mm's tables."""
    return KERNEL_HALF <= vaddr <= ULONG_MASK


def vpage_of(vaddr: int) -> int:
    """The virtual page number of an address."""
    return (vaddr & ULONG_MASK) >> PAGE_SHIFT


def pte_pfn(pte: int) -> int:
    """[4.6: pte_pfn] the page frame a leaf entry maps."""
    return (pte & PTE_PFN_MASK) >> PAGE_SHIFT


def flushed_pages(start: int, end: int) -> range | None:
    """The pages an INVLPG loop ``for (addr = start; addr < end; addr += PAGE_SIZE)`` reaches,
    or None when the request means everything (TLB_FLUSH_ALL, or start > end, which 4.6's
    unsigned page count turns into a full flush).

    [4.6: arch/x86/mm/tlb.c flush_tlb_mm_range, flush_tlb_func] the loop steps by whole pages
    from ``start``, so an unaligned range reaches the page of each stepped address, and
    those pages are consecutive.
    """
    if end == TLB_FLUSH_ALL or start > end:
        return None
    count = (end - start + PAGE_SIZE - 1) // PAGE_SIZE
    first = vpage_of(start)
    return range(first, first + count)


def permits(flags: int, vaddr: int, write: bool, exec_: bool) -> bool:
    """Whether an entry with these bits allows the access (PRESENT; USER for a user-half
    address; RW for a write; NX clear for a fetch).  [Simplified: an access is a user-mode
    access exactly when its address is in the user half.]"""
    if not flags & _PAGE_PRESENT:
        return False
    if not is_kernel_address(vaddr) and not flags & _PAGE_USER:
        return False
    if write and not flags & _PAGE_RW:
        return False
    return not (exec_ and flags & _PAGE_NX)


def fault_code(present: bool, vaddr: int, write: bool, exec_: bool) -> int:
    """[4.6: arch/x86/mm/fault.c] the error code the CPU pushes for this access."""
    code = PF_PROT if present else 0
    if write:
        code |= PF_WRITE
    if not is_kernel_address(vaddr):
        code |= PF_USER
    if exec_:
        code |= PF_INSTR
    return code


def grants_more(entry_flags: int, entry_pfn: int, pte: int) -> str:
    """Why a cached entry is more permissive than the table entry, or "" when it is not.

    A cached entry may grant *less* (upgrades need no flush) and may disagree about
    ACCESSED (4.6 clears it without a flush), but never more.
    """
    if not pte & _PAGE_PRESENT:
        return "the table entry is not present"
    if pte_pfn(pte) != entry_pfn:
        return f"the table maps pfn {pte_pfn(pte):#x}"
    extra = entry_flags & GRANTING_FLAGS & ~pte
    if extra:
        return f"the cached entry has {flag_names(extra)} that the table entry lacks"
    if pte & _PAGE_NX and not entry_flags & _PAGE_NX:
        return "the cached entry is executable but the table entry has NX"
    if (entry_flags ^ pte) & CACHE_FLAGS:
        return "the memory type (PWT/PCD/PAT) differs"
    return ""


_FLAG_NAMES: Final = ((_PAGE_PRESENT, "P"), (_PAGE_RW, "RW"), (_PAGE_USER, "U"),
                      (_PAGE_PWT, "PWT"), (_PAGE_PCD, "PCD"), (_PAGE_ACCESSED, "A"),
                      (_PAGE_DIRTY, "D"), (_PAGE_PAT, "PAT"), (_PAGE_GLOBAL, "G"),
                      (_PAGE_NX, "NX"))


def flag_names(flags: int) -> str:
    """``P|RW|U|A|NX`` (unnamed bits as hex)."""
    names = [name for bit, name in _FLAG_NAMES if flags & bit]
    rest = flags & ~sum(bit for bit, _name in _FLAG_NAMES) & ~PTE_PFN_MASK
    if rest:
        names.append(hex(rest))
    return "|".join(names) or "0"
