"""The TLB state machine, in lockstep and contract modes.

The machine plays the kernel around the TLB: it owns the page tables (a
:class:`refmodel.tlb.DictTables`; in lockstep each model gets its own copy, since walks set
ACCESSED and DIRTY in them) and changes them the way 4.6's callers do, then calls the flush
4.6 would call: zap (unmap) flushes the gathered range, mprotect flushes the whole range when
it rewrote anything, a COW break clears the entry and flushes the page before installing the
new one, fork write-protects the parent and flushes its whole mm, exit_mmap flushes the whole
mm from the exiting (now lazy) CPU, vunmap flushes the kernel range.  Fault-path upgrades
(ptep_set_access_flags) and ptep_clear_flush_young flush nothing, as on x86.  Every rule ends
at a point where 4.6 guarantees coherence, and the state invariants run there.

Every TLB call goes through :meth:`TlbMachineBase.step`: guarded, compared with refmodel in
lockstep (result, view and tables), and judged by the enabled TLB-R* rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from invariants.registry import LOCKSTEP, CheckFailure
from invariants.tlb import TlbSnapshot, TlbStep, describe_entry
from refmodel.tlb import DictTables, RefTlb
from specs.pte import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_GLOBAL,
    _PAGE_NX,
    _PAGE_PCD,
    _PAGE_PRESENT,
    _PAGE_PROTNONE,
    _PAGE_PWT,
    _PAGE_RW,
    _PAGE_SOFT_DIRTY,
    _PAGE_SPECIAL,
    _PAGE_USER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PTE_PFN_MASK,
)
from specs.tlb import (
    TLB_FLUSH_ALL,
    VM_HUGETLB,
    Access,
    Capability,
    TableView,
    TlbView,
    flag_names,
)
from stateful_tests.common import ConformanceMachine, MachineSpec, identifier
from stateful_tests.harness import (
    GuardedImpl,
    describe_call,
    is_int,
    want_instance,
    want_int,
)

#: The user pages the machine maps: 48 pages from 4 MiB, so 33- and 34-page ranges fit.
USER_BASE: Final = 0x400000
NR_USER_PAGES: Final = 48
#: Kernel pages from VMALLOC_START [4.6: arch/x86/include/asm/pgtable_64_types.h].
KERNEL_BASE: Final = 0xFFFFC90000000000
NR_KERNEL_PAGES: Final = 40
MAX_MMS: Final = 4

# 4.6's user protections [4.6: arch/x86/include/asm/pgtable_types.h]
PAGE_NONE: Final = _PAGE_PROTNONE | _PAGE_ACCESSED
PAGE_READONLY: Final = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED | _PAGE_NX
PAGE_SHARED: Final = PAGE_READONLY | _PAGE_RW
PAGE_READONLY_EXEC: Final = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED
PAGE_SHARED_EXEC: Final = PAGE_READONLY_EXEC | _PAGE_RW
USER_PROTS: Final = (PAGE_NONE, PAGE_READONLY, PAGE_SHARED, PAGE_READONLY_EXEC,
                     PAGE_SHARED_EXEC)
PAGE_KERNEL_EXEC: Final = _PAGE_PRESENT | _PAGE_RW | _PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_GLOBAL
PAGE_KERNEL: Final = PAGE_KERNEL_EXEC | _PAGE_NX
#: Bits a PTE may carry besides its protection: set by earlier faults, or software bits that
#: must never reach a TLB (TLB-I2), or a memory type.
EXTRA_BITS: Final = (0, 0, 0, _PAGE_DIRTY, _PAGE_SPECIAL, _PAGE_SOFT_DIRTY, _PAGE_PCD | _PAGE_PWT)
#: [4.6: arch/x86/include/asm/pgtable_types.h _PAGE_CHG_MASK] what pte_modify keeps.
PAGE_CHG_MASK: Final = (PTE_PFN_MASK | _PAGE_PCD | _PAGE_PWT | _PAGE_SPECIAL | _PAGE_ACCESSED
                        | _PAGE_DIRTY | _PAGE_SOFT_DIRTY)

RESULT_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "switch_mm": want_int,
    "enter_lazy_tlb": want_int,
    "access": lambda value: None if isinstance(value, Access) or is_int(value) else
    f"the contract requires an Access or an int, not {type(value).__name__}",
    "flush_tlb_mm_range": want_int,
    "flush_tlb_page": want_int,
    "flush_tlb_all": want_int,
    "flush_tlb_kernel_range": want_int,
}
OPERATIONS = tuple(RESULT_CHECKS)
VIEW_CHECKS: dict[str, Callable[[Any], str | None]] = {
    **RESULT_CHECKS, "view": want_instance(TlbView)}


def user_vaddr(page: int) -> int:
    """The address of one of the machine's user pages."""
    return USER_BASE + page * PAGE_SIZE


def kernel_vaddr(page: int) -> int:
    """The address of one of the machine's kernel pages."""
    return KERNEL_BASE + page * PAGE_SIZE


def pte_modify(pte: int, newprot: int) -> int:
    """[4.6: pte_modify] keep the pfn, A, D and software bits; take the rest from newprot."""
    return (pte & PAGE_CHG_MASK) | (newprot & ~PAGE_CHG_MASK)


def pte_present(pte: int) -> bool:
    """[4.6: pte_present] PRESENT, or PROTNONE (a PROT_NONE mapping is present to mm code)."""
    return bool(pte & (_PAGE_PRESENT | _PAGE_PROTNONE))


class TlbMachineBase(ConformanceMachine):
    """Shared machinery; :func:`make_tlb_machine` adds the rules."""

    def __init__(self) -> None:
        super().__init__()
        spec = self.spec
        self.tables = DictTables()
        for page in range(NR_KERNEL_PAGES):  # kernel text and data, global, with holes
            if page % 4 == 3:
                continue
            self.tables.set_pte(0, kernel_vaddr(page), (0x100 + page) << PAGE_SHIFT | PAGE_KERNEL)
        lockstep = spec.mode == "lockstep"
        self.ref_tables = self.tables.copy() if lockstep else None
        tables = self.tables
        caps = self.boot(Capability, tables)
        self.caps: frozenset[Capability] = caps
        self.checked_impl = GuardedImpl(self.sut, VIEW_CHECKS)
        self.ref = RefTlb(spec.config, self.ref_tables) if self.ref_tables is not None else None
        self.select_checks("tlb", caps, OPERATIONS)
        self.mms: list[int] = [1, 2]
        self.next_mm = 3
        self.view = self._sut_view()
        self.ref_view = self.ref.view() if self.ref is not None else None
        self._compare("boot", {})
        self.populate()

    def populate(self) -> None:
        """The starting point of every run: two mms with every page mapped (a mix of
        protections, some entries dirty or carrying software bits), and a task of the first
        on every CPU: threads of one process, so flushes must reach other CPUs from the
        first step on."""
        for mm in self.mms:
            self.fill_mm(mm)
        for cpu in range(self.spec.config.nr_cpus):
            self.step("switch_mm", cpu=cpu, mm=self.mms[0])

    # -- the step ------------------------------------------------------------------------------

    def step(self, op: str, **args: int) -> Any:
        """One TLB call, in both models when in lockstep, judged by every enabled rule."""
        before, tables_before = self.view, self.tables.view()
        result = self.sut.call(op, args, RESULT_CHECKS[op])
        if self.ref is not None:
            expected = getattr(self.ref, op)(**args)
            if result != expected and LOCKSTEP in self.spec.enabled:
                self.fail(LOCKSTEP, f"{describe_call(op, args)}: {self.spec.impl_name} "
                                    f"returned {result!r}, refmodel returned {expected!r}")
        self.view = self._sut_view()
        if self.ref is not None:
            self.ref_view = self.ref.view()
            self._compare(op, args)
        record = TlbStep(op=op, args=args, result=result, before=before, after=self.view,
                         tables_before=tables_before, tables_after=self.tables.view(),
                         impl=self.checked_impl)
        for check in self.step_checks[op]:
            problems = list(check.fn(record))
            if problems:
                self.fail(check.id, f"{describe_call(op, args)}: {check.title}:\n  "
                          + "\n  ".join(problems))
        return result

    def set_pte(self, mm: int, vaddr: int, pte: int) -> None:
        """Change a table entry in every model's tables (the TLBs are not told)."""
        self.tables.set_pte(mm, vaddr, pte)
        if self.ref_tables is not None:
            self.ref_tables.set_pte(mm, vaddr, pte)

    def _sut_view(self) -> TlbView:
        view: TlbView = self.sut.call("view", {}, want_instance(TlbView))
        return view

    def _compare(self, op: str, args: dict[str, int]) -> None:
        if self.ref_view is None or self.ref_tables is None or LOCKSTEP not in self.spec.enabled:
            return
        where = f"after {describe_call(op, args)}"
        difference = view_difference(self.ref_view, self.view)
        if difference:
            self.fail(LOCKSTEP, f"{where} the views differ: {difference}")
        ref_tables, tables = self.ref_tables.view(), self.tables.view()
        if ref_tables != tables:
            self.fail(LOCKSTEP, f"{where} the tables differ: "
                                f"{table_difference(ref_tables, tables)}")

    # -- invariants ----------------------------------------------------------------------------

    def invariants_hold(self) -> None:
        """TLB-I*: after every rule, a point where 4.6 guarantees coherence.  In lockstep
        refmodel's view has just been compared equal, so it is judged separately only once
        LOCKSTEP has been set aside."""
        snaps = [("", TlbSnapshot(impl=self.checked_impl, view=self.view,
                                  tables=self.tables.view()))]
        if (self.ref is not None and self.ref_view is not None and self.ref_tables is not None
                and LOCKSTEP not in self.spec.enabled):
            snaps.append(("refmodel: ", TlbSnapshot(impl=self.ref, view=self.ref_view,
                                                    tables=self.ref_tables.view())))
        for prefix, snap in snaps:
            for check in self.state_checks:
                problems = list(check.fn(snap))
                if problems:
                    self.fail(check.id, f"{prefix}{check.title}:\n  " + "\n  ".join(problems))

    def teardown(self) -> None:
        """Nothing is swept: every invariant already ran after every rule."""

    def fail(self, check_id: str, message: str) -> None:
        """Raise the failure with a picture of every CPU's TLB."""
        raise CheckFailure(check_id, f"{message}\nTLBs after the step:\n"
                                     f"{render(self.view, self.tables.view())}")

    # -- helpers for the rule bodies -----------------------------------------------------------

    def fill_mm(self, mm: int) -> None:
        """Map every user page of a new mm (as exec maps a program): no flush, since no CPU
        can have anything of a new mm cached."""
        for page in range(NR_USER_PAGES):
            prot = USER_PROTS[1 + (page + mm) % (len(USER_PROTS) - 1)]
            extra = EXTRA_BITS[(page * 7 + mm) % len(EXTRA_BITS)]
            self.set_pte(mm, user_vaddr(page), (0x200 + 64 * mm + page) << PAGE_SHIFT
                         | prot | extra)

    def mm_at(self, index: int) -> int:
        """One of the live mms, chosen by index."""
        return self.mms[index % len(self.mms)]

    def caller_mm(self, cpu: int, mm_index: int, own: bool) -> int:
        """The mm an operation works on: with ``own``, the calling CPU's active mm when it is
        live (munmap, mprotect and COW come from a task of the mm itself; a kernel thread
        works on the mm it borrows), else any live mm (reclaim, or another process, working
        from a different context)."""
        me = self.view.cpus[cpu] if 0 <= cpu < len(self.view.cpus) else None
        if own and me is not None and me.active_mm in self.mms:
            return me.active_mm
        return self.mm_at(mm_index)

    def runs(self, cpu: int) -> int | None:
        """The mm a user task runs on cpu (None when a kernel thread runs)."""
        me = self.view.cpus[cpu] if 0 <= cpu < len(self.view.cpus) else None
        if me is None or me.lazy or me.active_mm not in self.mms:
            return None
        return me.active_mm

    @staticmethod
    def inside(page: int, count: int, pages: int = NR_USER_PAGES) -> int:
        """The first page of a count-page range placed inside the pool (so that its last
        page is one the machine maps and touches)."""
        return page % max(pages - count + 1, 1)

    def zap(self, mm: int, cpu: int, first: int, count: int) -> None:
        """[4.6: zap_page_range, tlb_finish_mmu] clear the present entries and flush the
        range the mmu_gather recorded (nothing when nothing was cleared)."""
        start, end = TLB_FLUSH_ALL, 0
        for page in range(first, first + count):
            vaddr = user_vaddr(page)
            if pte_present(self.tables.lookup(mm, vaddr)):
                self.set_pte(mm, vaddr, 0)
                start, end = min(start, vaddr), max(end, vaddr + PAGE_SIZE)
        if end:
            self.step("flush_tlb_mm_range", cpu=cpu, mm=mm, start=start, end=end, vmflag=0)

    # -- rule bodies -----------------------------------------------------------------------------

    def do_map(self, kernel: bool, mm_index: int, page: int, pfn: int, prot: int,
               extra: int) -> None:
        """A fault (or vmap, for a kernel page) installs an entry where there was none: no
        flush, since nothing can be cached for a page that was not mapped."""
        self.trace.rule("map", kernel=kernel, mm_index=mm_index, page=page, pfn=pfn, prot=prot,
                        extra=extra)
        if kernel:
            mm, vaddr = 0, kernel_vaddr(page % NR_KERNEL_PAGES)
            prot = PAGE_KERNEL_EXEC if prot & _PAGE_NX == 0 else PAGE_KERNEL
        else:
            mm, vaddr = self.mm_at(mm_index), user_vaddr(page)
        if not self.tables.lookup(mm, vaddr):
            self.set_pte(mm, vaddr, pfn << PAGE_SHIFT | prot | extra)

    def do_remap(self, mm_index: int, own: bool, page: int, pfn: int, cpu: int) -> None:
        """[4.6: wp_page_copy] a COW break: clear and flush the page, then map the copy
        writable."""
        self.trace.rule("remap", mm_index=mm_index, own=own, page=page, pfn=pfn, cpu=cpu)
        mm, vaddr = self.caller_mm(cpu, mm_index, own), user_vaddr(page)
        old = self.tables.lookup(mm, vaddr)
        if old & _PAGE_PRESENT:
            self.set_pte(mm, vaddr, 0)  # ptep_clear_flush
            self.step("flush_tlb_page", cpu=cpu, mm=mm, vaddr=vaddr)
            new = (old & ~PTE_PFN_MASK) | pfn << PAGE_SHIFT | _PAGE_RW | _PAGE_DIRTY
            self.set_pte(mm, vaddr, new)

    def do_unmap(self, kernel: bool, mm_index: int, own: bool, page: int, count: int,
                 cpu: int) -> None:
        """munmap / MADV_DONTNEED of a user range, or vunmap of a kernel range (cleared, then
        flush_tlb_kernel_range over the area) [Simplified in the machine: no lazy vmap
        purging; the flush is immediate]."""
        self.trace.rule("unmap", kernel=kernel, mm_index=mm_index, own=own, page=page,
                        count=count, cpu=cpu)
        if not kernel:
            self.zap(self.caller_mm(cpu, mm_index, own), cpu, self.inside(page, count), count)
            return
        page = self.inside(page % 16, count, NR_KERNEL_PAGES)  # where tasks' reads land
        for p in range(page, page + count):
            self.set_pte(0, kernel_vaddr(p), 0)
        self.step("flush_tlb_kernel_range", cpu=cpu, start=kernel_vaddr(page),
                  end=kernel_vaddr(page + count))

    def do_protect(self, mm_index: int, own: bool, page: int, count: int, prot: int,
                   cpu: int) -> None:
        """[4.6: change_protection_range] rewrite every present entry with pte_modify and
        flush the whole range if any was rewritten (upgrades included)."""
        self.trace.rule("protect", mm_index=mm_index, own=own, page=page, count=count,
                        prot=prot, cpu=cpu)
        mm, rewritten = self.caller_mm(cpu, mm_index, own), 0
        page = self.inside(page, count)
        for p in range(page, page + count):
            old = self.tables.lookup(mm, user_vaddr(p))
            if pte_present(old):
                self.set_pte(mm, user_vaddr(p), pte_modify(old, prot))
                rewritten += 1
        if rewritten:
            self.step("flush_tlb_mm_range", cpu=cpu, mm=mm, start=user_vaddr(page),
                      end=user_vaddr(page + count), vmflag=0)

    def do_young(self, mm_index: int, page: int, kind: str) -> None:
        """Entry changes that flush nothing on x86: a fault making the entry young, and on a
        write fault dirty and writable (ptep_set_access_flags: a stale cached entry only
        grants less), or reclaim ageing it (ptep_clear_flush_young clears ACCESSED alone)."""
        self.trace.rule("young", mm_index=mm_index, page=page, kind=kind)
        mm, vaddr = self.mm_at(mm_index), user_vaddr(page)
        old = self.tables.lookup(mm, vaddr)
        if not old & _PAGE_PRESENT:
            return
        if kind == "mkold":
            self.set_pte(mm, vaddr, old & ~_PAGE_ACCESSED)
        else:
            self.set_pte(mm, vaddr, old | _PAGE_ACCESSED
                         | (_PAGE_RW | _PAGE_DIRTY if kind == "write" else 0))

    def do_access(self, cpu: int, page: int, kernel: bool, write: bool, exec_: bool) -> None:
        """A load, store or fetch from one CPU, through whatever CR3 holds."""
        self.trace.rule("access", cpu=cpu, page=page, kernel=kernel, write=write, exec_=exec_)
        vaddr = kernel_vaddr(page) if kernel else user_vaddr(page)
        self.step("access", cpu=cpu, vaddr=vaddr, write=write, exec=exec_)

    def do_touch(self, cpu: int, page: int, count: int, write: bool, kernel: bool) -> None:
        """Load (or store) a run of user or kernel pages: fills many entries in one rule, so
        that flushes find entries inside and outside their range."""
        self.trace.rule("touch", cpu=cpu, page=page, count=count, write=write, kernel=kernel)
        last = NR_KERNEL_PAGES if kernel else NR_USER_PAGES
        for p in range(page, min(page + count, last)):
            self.step("access", cpu=cpu, vaddr=kernel_vaddr(p) if kernel else user_vaddr(p),
                      write=write, exec=False)

    def do_schedule(self, cpu: int, to: str, mm_index: int, run: int) -> None:
        """A context switch on cpu, to one of:

        * ``kthread``: a kernel thread (lazy TLB mode), which reads ``run`` kernel pages;
        * ``reclaim``: kswapd, lazy on the borrowed mm, which unmaps page ``run`` of it as
          try_to_unmap does (ptep_clear_flush: flush_tlb_page from a lazy CPU, so this CPU
          leaves the mm), after which the previous task of that mm resumes;
        * ``same``: a task of the mm the CPU runs or borrows, which reads its first ``run``
          pages (its working set) and, in system calls, the first ``run // 4`` kernel pages;
        * ``other``: a task of another live mm (any, when there is no other), likewise.
        """
        self.trace.rule("schedule", cpu=cpu, to=to, mm_index=mm_index, run=run)
        if to in ("kthread", "reclaim") or not self.mms:
            self.step("enter_lazy_tlb", cpu=cpu)
            borrowed = self.view.cpus[cpu].active_mm
            vaddr = user_vaddr(run % NR_USER_PAGES)
            if to == "reclaim" and borrowed in self.mms:
                if self.tables.lookup(borrowed, vaddr) & _PAGE_PRESENT:
                    self.set_pte(borrowed, vaddr, 0)
                    self.step("flush_tlb_page", cpu=cpu, mm=borrowed, vaddr=vaddr)
                self.step("switch_mm", cpu=cpu, mm=borrowed)
                return
            pages = [kernel_vaddr(p) for p in range(min(run, NR_KERNEL_PAGES))]
        else:
            active = self.view.cpus[cpu].active_mm if 0 <= cpu < len(self.view.cpus) else 0
            others = [mm for mm in self.mms if mm != active] or self.mms
            mm = (self.caller_mm(cpu, mm_index, True) if to == "same"
                  else others[mm_index % len(others)])
            self.step("switch_mm", cpu=cpu, mm=mm)
            pages = [user_vaddr(p) for p in range(min(run, NR_USER_PAGES))]
            pages += [kernel_vaddr(p) for p in range(min(run // 4, NR_KERNEL_PAGES))]
        for vaddr in pages:
            self.step("access", cpu=cpu, vaddr=vaddr, write=False, exec=False)

    def do_flush(self, kind: str, cpu: int, mm_index: int, own: bool, page: int, count: int,
                 hugetlb: bool) -> None:
        """An explicit flush with no table change (always allowed, never required)."""
        self.trace.rule("flush", kind=kind, cpu=cpu, mm_index=mm_index, own=own, page=page,
                        count=count, hugetlb=hugetlb)
        mm = self.caller_mm(cpu, mm_index, own)
        page = (self.inside(page % 16, count, NR_KERNEL_PAGES) if kind == "kernel"
                else self.inside(page, count))
        start, end = user_vaddr(page), user_vaddr(page + count)
        if kind == "range":
            self.step("flush_tlb_mm_range", cpu=cpu, mm=mm, start=start, end=end,
                      vmflag=VM_HUGETLB if hugetlb else 0)
        elif kind == "mm":
            self.step("flush_tlb_mm_range", cpu=cpu, mm=mm, start=0, end=TLB_FLUSH_ALL,
                      vmflag=0)
        elif kind == "page":
            self.step("flush_tlb_page", cpu=cpu, mm=mm, vaddr=start)
        elif kind == "all":
            self.step("flush_tlb_all", cpu=cpu)
        else:
            self.step("flush_tlb_kernel_range", cpu=cpu, start=kernel_vaddr(page),
                      end=kernel_vaddr(page + count))

    def do_fork(self, cpu: int) -> None:
        """[4.6: dup_mmap, copy_one_pte] the task on cpu forks: both copies of every private
        entry are write-protected (the child's also old), then flush_tlb_mm(oldmm)."""
        self.trace.rule("fork", cpu=cpu)
        parent = self.runs(cpu)
        if parent is None or len(self.mms) >= MAX_MMS:
            return
        child = self.next_mm
        self.next_mm += 1
        self.mms.append(child)
        for page in range(NR_USER_PAGES):
            vaddr = user_vaddr(page)
            pte = self.tables.lookup(parent, vaddr)
            if pte_present(pte):
                self.set_pte(parent, vaddr, pte & ~_PAGE_RW)  # ptep_set_wrprotect
                self.set_pte(child, vaddr, pte & ~(_PAGE_RW | _PAGE_ACCESSED))
        self.step("flush_tlb_mm_range", cpu=cpu, mm=parent, start=0, end=TLB_FLUSH_ALL,
                  vmflag=0)

    def do_exit(self, cpu: int) -> None:
        """[4.6: exit_mm, exit_mmap] the last task of an mm exits on cpu: the CPU turns lazy
        on it, every entry is cleared, and the whole mm is flushed from this CPU.  Lazy
        borrowers elsewhere keep it as active_mm until they switch."""
        self.trace.rule("exit", cpu=cpu)
        mm = self.runs(cpu)
        if mm is None or any(self.runs(other) == mm for other in range(len(self.view.cpus))
                             if other != cpu):
            return
        self.step("enter_lazy_tlb", cpu=cpu)
        for key in [k for k in self.tables.user if k[0] == mm]:
            self.set_pte(mm, key[1] << PAGE_SHIFT, 0)
        self.step("flush_tlb_mm_range", cpu=cpu, mm=mm, start=0, end=TLB_FLUSH_ALL, vmflag=0)
        self.mms.remove(mm)

    def do_spawn(self) -> None:
        """exec of a new program: a fresh mm with every page mapped joins the live ones."""
        self.trace.rule("spawn")
        if len(self.mms) < MAX_MMS:
            self.mms.append(self.next_mm)
            self.fill_mm(self.next_mm)
            self.next_mm += 1

    def do_bad_call(self, op: str, cpu: int, mm: int, addr: int) -> None:
        """Any operation with arguments that may be out of range."""
        self.trace.rule("bad_call", op=op, cpu=cpu, mm=mm, addr=addr)
        args: dict[str, dict[str, Any]] = {
            "switch_mm": {"cpu": cpu, "mm": mm},
            "enter_lazy_tlb": {"cpu": cpu},
            "access": {"cpu": cpu, "vaddr": addr, "write": False, "exec": False},
            "flush_tlb_mm_range": {"cpu": cpu, "mm": mm, "start": addr,
                                   "end": addr + PAGE_SIZE, "vmflag": 0},
            "flush_tlb_page": {"cpu": cpu, "mm": mm, "vaddr": addr},
            "flush_tlb_all": {"cpu": cpu},
            "flush_tlb_kernel_range": {"cpu": cpu, "start": addr, "end": addr},
        }
        self.step(op, **args[op])


# ---------------------------------------------------------------------------------------------
# Differences and pictures
# ---------------------------------------------------------------------------------------------


def view_difference(expected: TlbView, actual: TlbView) -> str:
    """The first difference between two views, in words ("" when equal)."""
    if expected == actual:
        return ""
    for ref, imp in zip(expected.cpus, actual.cpus, strict=False):
        if ref != imp:
            for field in ("active_mm", "loaded_mm", "lazy", "irq_tlb_count"):
                if getattr(ref, field) != getattr(imp, field):
                    return (f"cpu{ref.cpu}.{field} is {getattr(imp, field)}, refmodel "
                            f"{getattr(ref, field)}")
            mine, theirs = set(imp.entries), set(ref.entries)
            extra = sorted(mine - theirs)
            missing = sorted(theirs - mine)
            if extra:
                return f"cpu{ref.cpu} caches {describe_entry(extra[0])}; refmodel does not"
            if missing:
                return f"cpu{ref.cpu} lacks {describe_entry(missing[0])}, which refmodel caches"
            return f"cpu{ref.cpu} differs"
    if expected.mm_cpumask != actual.mm_cpumask:
        return f"mm_cpumask is {actual.mm_cpumask}, refmodel {expected.mm_cpumask}"
    if expected.events != actual.events:
        return f"events are {actual.events}, refmodel {expected.events}"
    return f"{actual.nr_cpus} CPUs, refmodel {expected.nr_cpus}"


def table_difference(expected: TableView, actual: TableView) -> str:
    """The first table entry that differs."""
    for name, want, got in (("user", expected.user, actual.user),
                            ("kernel", expected.kernel, actual.kernel)):
        for key in sorted(set(want) | set(got), key=str):
            a, b = got.get(key, 0), want.get(key, 0)  # type: ignore[call-overload]
            if a != b:
                return f"{name} entry {key}: {a:#x}, refmodel {b:#x}"
    return "?"


def render(view: TlbView, tables: TableView) -> str:
    """Every CPU's state and entries, with the table entry each one translates."""
    lines = []
    for cpu in view.cpus:
        state = "lazy" if cpu.lazy else "running"
        lines.append(f"  cpu{cpu.cpu}: {state}, active mm {cpu.active_mm}, CR3 mm "
                     f"{cpu.loaded_mm}, {len(cpu.entries)} entries")
        for entry in cpu.entries[:12]:
            pte = tables.lookup(cpu.loaded_mm, entry.vpage << PAGE_SHIFT)
            lines.append(f"    {describe_entry(entry)}   table: pfn "
                         f"{(pte & PTE_PFN_MASK) >> PAGE_SHIFT:#x} [{flag_names(pte)}]")
        if len(cpu.entries) > 12:
            lines.append(f"    ... {len(cpu.entries) - 12} more")
    lines.append(f"  mm_cpumask: {dict(view.mm_cpumask) or '{}'}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The machine class
# ---------------------------------------------------------------------------------------------


def make_tlb_machine(spec: MachineSpec) -> type[TlbMachineBase]:
    """A machine class for one implementation, mode and machine."""
    nr_cpus = spec.config.nr_cpus
    cpus = st.integers(0, nr_cpus - 1)
    mm_index = st.integers(0, MAX_MMS - 1)
    user_page = st.integers(0, NR_USER_PAGES - 1)
    pfns = st.integers(0, max(spec.config.nr_pages, 2) - 1)
    #: around the 33-page ceiling most of the time
    counts = st.sampled_from([1, 2, 3, 32, 33, 34]) | st.integers(1, 40)
    have_mm = precondition(lambda self: bool(self.mms))

    class TlbMachine(TlbMachineBase):
        @rule(kernel=st.booleans(), mm_index=mm_index, page=user_page, pfn=pfns,
              prot=st.sampled_from(USER_PROTS), extra=st.sampled_from(EXTRA_BITS))
        def map(self, kernel: bool, mm_index: int, page: int, pfn: int, prot: int,
                extra: int) -> None:
            if kernel or self.mms:
                self.do_map(kernel, mm_index, page, pfn, prot, extra)

        @have_mm
        @rule(mm_index=mm_index, own=st.booleans(), page=user_page, pfn=pfns, cpu=cpus)
        def remap(self, mm_index: int, own: bool, page: int, pfn: int, cpu: int) -> None:
            self.do_remap(mm_index, own, page, pfn, cpu)

        @rule(kernel=st.booleans(), mm_index=mm_index, own=st.booleans(), page=user_page,
              count=counts, cpu=cpus)
        def unmap(self, kernel: bool, mm_index: int, own: bool, page: int, count: int,
                  cpu: int) -> None:
            if kernel or self.mms:
                self.do_unmap(kernel, mm_index, own, page, count, cpu)

        @have_mm
        @rule(mm_index=mm_index, own=st.booleans(), page=user_page, count=counts,
              prot=st.sampled_from(USER_PROTS), cpu=cpus)
        def protect(self, mm_index: int, own: bool, page: int, count: int, prot: int,
                    cpu: int) -> None:
            self.do_protect(mm_index, own, page, count, prot, cpu)

        @have_mm
        @rule(mm_index=mm_index, page=user_page, kind=st.sampled_from(["read", "write",
                                                                       "mkold"]))
        def young(self, mm_index: int, page: int, kind: str) -> None:
            self.do_young(mm_index, page, kind)

        @rule(cpu=cpus, page=user_page, kernel=st.booleans(), write=st.booleans(),
              exec_=st.booleans())
        def access(self, cpu: int, page: int, kernel: bool, write: bool, exec_: bool) -> None:
            self.do_access(cpu, page, kernel, write, exec_)

        @rule(cpu=cpus, page=user_page, count=st.integers(1, NR_USER_PAGES), write=st.booleans(),
              kernel=st.booleans())
        def touch(self, cpu: int, page: int, count: int, write: bool, kernel: bool) -> None:
            self.do_touch(cpu, page, count, write, kernel)

        @rule(cpu=cpus, to=st.sampled_from(["kthread", "reclaim", "same", "other"]),
              mm_index=mm_index,
              run=st.integers(0, NR_USER_PAGES))
        def schedule(self, cpu: int, to: str, mm_index: int, run: int) -> None:
            self.do_schedule(cpu, to, mm_index, run)

        @have_mm
        @rule(kind=st.sampled_from(["range", "range", "page", "page", "mm", "all", "kernel",
                                    "kernel"]),
              cpu=cpus,
              mm_index=mm_index, own=st.booleans(), page=user_page, count=counts,
              hugetlb=st.booleans())
        def flush(self, kind: str, cpu: int, mm_index: int, own: bool, page: int, count: int,
                  hugetlb: bool) -> None:
            self.do_flush(kind, cpu, mm_index, own, page, count, hugetlb)

        @precondition(lambda self: len(self.mms) < MAX_MMS)
        @rule(cpu=cpus)
        def fork(self, cpu: int) -> None:
            self.do_fork(cpu)

        @precondition(lambda self: len(self.mms) > 2)
        @rule(cpu=cpus)
        def exit(self, cpu: int) -> None:
            self.do_exit(cpu)

        @precondition(lambda self: len(self.mms) < MAX_MMS)
        @rule()
        def spawn(self) -> None:
            self.do_spawn()

        @rule(op=st.sampled_from(OPERATIONS),
              cpu=st.sampled_from([-1, nr_cpus, nr_cpus + 1]) | cpus,
              mm=st.integers(-1, MAX_MMS + 2),
              addr=st.sampled_from([0, USER_BASE, 1 << 47, KERNEL_BASE, TLB_FLUSH_ALL, -1,
                                    1 << 64]))
        def bad_call(self, op: str, cpu: int, mm: int, addr: int) -> None:
            self.do_bad_call(op, cpu, mm, addr)

    TlbMachine.spec = spec
    TlbMachine.__name__ = TlbMachine.__qualname__ = (
        f"Tlb{spec.mode.capitalize()}_{identifier(spec.impl_name)}")
    return TlbMachine


__all__ = ["TlbMachineBase", "make_tlb_machine"]
