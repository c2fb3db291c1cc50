"""The page-table state machine, in lockstep and contract modes.

:func:`make_pagetable_machine` builds a :class:`ConformanceMachine` for one implementation,
mode and machine configuration.  The implementation gets its table pages from a page allocator
of its own (its own buddy implementation when it has one, refmodel's otherwise); the machine
allocates the *data* pages that leaf entries map from that same allocator, so PAGETABLE-I5 can
ask the allocator whether a mapped page is still held.  In lockstep mode refmodel runs beside
it on a second allocator, and results, table views and allocator views must stay equal.

Addresses are drawn near a few anchors (low memory, a 1 GiB and a 512 GiB boundary, the top of
user space) so that mappings share tables and free_pgtables' floor and ceiling cases come up;
bad input (non-canonical and kernel addresses, dead mms, entries with undefined bits, freeing
tables still in use) has rules of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, consumes, initialize, multiple, precondition, rule

from invariants.pagetable import PageTableSnapshot
from invariants.pagetable_rules import PageTableStep, difference
from invariants.registry import LOCKSTEP, CheckFailure
from refmodel.buddy import RefBuddy
from refmodel.pagetable import RefPageTables
from specs import pte as pt
from specs.buddy import PageAllocator
from specs.gfp import GFP_HIGHUSER_MOVABLE
from specs.pagetable import Capability, Level, PageTableView
from stateful_tests.common import ConformanceMachine, Handle, MachineSpec, identifier
from stateful_tests.harness import GuardedImpl, want_instance, want_int
from stateful_tests.suites import dependency


def want_int_or_none(value: Any) -> str | None:
    """Result check for mm_alloc."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return None
    return f"the contract requires an int mm id or None, not {type(value).__name__}"


def want_walk(value: Any) -> str | None:
    """Result check for walk: a pair of ints."""
    if (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return None
    return f"the contract requires a (level, entry) pair of ints, not {value!r}"


RESULT_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "mm_alloc": want_int_or_none,
    "pud_alloc": want_int, "pmd_alloc": want_int, "pte_alloc": want_int,
    "set_pte_at": want_int, "ptep_get_and_clear": want_int, "ptep_set_wrprotect": want_int,
    "ptep_test_and_clear_young": want_int, "ptep_mkclean": want_int,
    "change_protection": want_int, "walk": want_walk, "free_pgtables": want_int,
    "mm_teardown": want_int,
}
OPERATIONS = tuple(RESULT_CHECKS)

#: Where mappings cluster: low memory, just below 1 GiB, a 512 GiB boundary, the top of user
#: space.  Offsets of up to MAX_OFFSET pages either side cross PMD (512-page) boundaries.
ANCHORS = (0x400000, 1 << 30, 1 << 39, pt.TASK_SIZE_MAX - (2 << 20))
MAX_OFFSET = 700
#: Addresses no user mm may map: the top user page, the first non-canonical address, the
#: kernel's direct map, the last address, and values that are not 64-bit addresses at all.
BAD_ADDRESSES = (pt.TASK_SIZE_MAX, 1 << 47, 0x0000_8000_0000_1000, 0xFFFF_8800_0000_0000,
                 pt.ENTRY_MASK, -pt.PAGE_SIZE, 1 << 64)
#: Leaf modifiers the set_entry rule applies to an entry it read back.
MODIFIERS: dict[str, Callable[[int], int]] = {
    name: getattr(pt, name) for name in (
        "pte_mkyoung", "pte_mkold", "pte_mkdirty", "pte_mkclean", "pte_mkwrite",
        "pte_wrprotect", "pte_mkexec", "pte_mkspecial", "pte_mksoft_dirty",
        "pte_clear_soft_dirty", "pte_mkglobal", "pte_clrglobal")}
IN_PLACE = ("ptep_mkclean", "ptep_test_and_clear_young", "ptep_set_wrprotect")
#: Protections a mapping is made with: writable ones first (Hypothesis favours early values)
PROTS = (pt.PAGE_SHARED, pt.PAGE_SHARED_EXEC, pt.PAGE_READONLY, pt.PAGE_READONLY_EXEC,
         pt.PAGE_NONE)
MAX_RUN = 8  # pages one map/unmap/protect rule covers at most


@attrs.define(eq=False)
class MmHandle(Handle):
    """An mm the machine created; ``mm`` is the id the implementation returned."""

    mm: int

    def __repr__(self) -> str:
        return f"mm{self.mm}"


class PageTableMachineBase(ConformanceMachine):
    """Shared machinery; :func:`make_pagetable_machine` adds the rules."""

    spec: ClassVar[MachineSpec]
    mms = Bundle("mms")

    def __init__(self) -> None:
        super().__init__()
        spec = self.spec
        self.steps = 0
        self.pages: PageAllocator = dependency(spec, "buddy")
        pages = self.pages
        caps = self.boot(Capability, pages)
        self.caps: frozenset[Capability] = caps
        self.checked = GuardedImpl(self.sut, {**RESULT_CHECKS,
                                              "view": want_instance(PageTableView)})
        self.ref_pages: PageAllocator | None = None
        self.ref: RefPageTables | None = None
        if spec.mode == "lockstep":
            self.ref_pages = RefBuddy(spec.config)
            self.ref = RefPageTables(spec.config, self.ref_pages)
        self.select_checks("pagetable", caps, OPERATIONS)
        #: mm id -> {page address -> data pfn} for every page the machine mapped
        self.mapped: dict[int, dict[int, int]] = {}
        self.view = self._sut_view()
        if self.ref is not None:
            self._compare("boot", {}, None, None)

    # -- the step --------------------------------------------------------------------------------

    def step(self, op: str, **args: int) -> Any:
        """One call, in both models when in lockstep, judged by every enabled rule."""
        before = self.view
        result = self.sut.call(op, args, RESULT_CHECKS[op])
        self.view = self._sut_view()
        if self.ref is not None:
            expected = getattr(self.ref, op)(**args)
            self._compare(op, args, result, expected)
        record = PageTableStep(op=op, args=args, result=result, before=before, after=self.view,
                               pages=self.pages, config=self.spec.config)
        for check in self.step_checks[op]:
            problems = list(check.fn(record))
            if problems:
                self._fail(check.id, f"{check.title}:\n  " + "\n  ".join(problems),
                           args.get("mm"))
        self.steps += 1
        return result

    def _sut_view(self) -> PageTableView:
        view: PageTableView = self.sut.call("view", {}, want_instance(PageTableView))
        return view

    def _compare(self, op: str, args: dict[str, int], result: Any, expected: Any) -> None:
        if self.ref is None or self.ref_pages is None or LOCKSTEP not in self.spec.enabled:
            return
        call = f"{op}({', '.join(f'{k}={v:#x}' for k, v in args.items())})"
        if result != expected:
            self._fail(LOCKSTEP, f"{call}: {self.spec.impl_name} returned {_show(result)}, "
                                 f"refmodel returned {_show(expected)}", args.get("mm"))
        diff = difference(self.ref.view(), self.view, limit=6)
        if diff:
            self._fail(LOCKSTEP, f"after {call} the tables differ from refmodel's (refmodel "
                                 f"-> {self.spec.impl_name}): {diff}", args.get("mm"))
        if self.pages.view() != self.ref_pages.view():
            self._fail(LOCKSTEP, f"after {call} the page allocator's free lists differ from "
                                 f"refmodel's: table pages were allocated or freed in another "
                                 f"order", args.get("mm"))

    # -- invariants ------------------------------------------------------------------------------

    def invariants_hold(self) -> None:
        """Every enabled state invariant on the implementation's view."""
        snap = PageTableSnapshot(view=self.view, pages=self.pages, config=self.spec.config)
        for check in self.state_checks:
            problems = list(check.fn(snap))
            if problems:
                self._fail(check.id, f"{check.title}:\n  " + "\n  ".join(problems), None)

    def teardown(self) -> None:
        """Nothing to release: every model lives in this process and dies with the machine."""

    def _fail(self, check_id: str, message: str, mm: int | None) -> None:
        picture = render_tables(self.view, mm)
        raise CheckFailure(check_id, f"{message}\ntables after the step:\n{picture}")

    # -- data pages ------------------------------------------------------------------------------

    def _data_page(self) -> int | None:
        """One page for a leaf entry to map, from the implementation's allocator (and, in
        lockstep, the same pfn from refmodel's)."""
        pfn = self.pages.alloc_pages(GFP_HIGHUSER_MOVABLE, 0)
        if self.ref_pages is not None:
            ref_pfn = self.ref_pages.alloc_pages(GFP_HIGHUSER_MOVABLE, 0)
            if pfn != ref_pfn and LOCKSTEP in self.spec.enabled:
                self._fail(LOCKSTEP, f"a data page came from pfn {_show(pfn)}, refmodel's "
                                     f"allocator gave {_show(ref_pfn)}", None)
        return pfn

    def _release(self, pfn: int) -> None:
        self.pages.free_pages(pfn, 0)
        if self.ref_pages is not None:
            self.ref_pages.free_pages(pfn, 0)

    def _bounds(self, mm: int, start: int, end: int) -> tuple[int, int]:
        """free_pgtables' floor and ceiling, taking every mapped page as a VMA of its own: the
        end of the last one below ``start`` and the start of the first one at or above
        ``end`` (0 when there is none: the top) [4.6: mm/memory.c free_pgtables]."""
        below = [a for a in self.mapped.get(mm, {}) if a < start]
        above = [a for a in self.mapped.get(mm, {}) if a >= end]
        return (max(below) + pt.PAGE_SIZE if below else 0,
                min(above) if above else pt.USER_PGTABLES_CEILING)

    def _pick(self, mm: MmHandle, index: int, addr: int) -> int:
        """A mapped page of the mm, chosen by ``index``; ``addr`` when the mm has none or
        when ``index`` is 7 modulo 8 (so unmapped addresses of mapped mms come up too)."""
        mapped = sorted(self.mapped.get(mm.mm, {}))
        return mapped[index % len(mapped)] if mapped and index % 8 != 7 else addr

    # -- rule bodies -----------------------------------------------------------------------------

    def do_mm_alloc(self) -> Any:
        """A new mm."""
        self.trace.rule("mm_alloc")
        mm = self.step("mm_alloc")
        if mm is None or mm not in self.view.by_mm or mm in self.mapped:
            return multiple()
        self.mapped[mm] = {}
        return self.new_handle(MmHandle, mm=mm)

    def do_map(self, mm: MmHandle, addr: int, pages: int, prot: int) -> None:
        """Map ``pages`` fresh data pages from ``addr`` with protection ``prot``, as a fault
        would: pte_alloc, then set_pte_at of pfn_pte(page, prot)."""
        self.trace.rule("map", mm=mm, addr=addr, pages=pages, prot=prot)
        mapped = self.mapped.setdefault(mm.mm, {})
        for page in range(pages):
            where = addr + page * pt.PAGE_SIZE
            if not pt.is_user_address(where) or where in mapped:
                continue
            if self.step("pte_alloc", mm=mm.mm, addr=where) != 0:
                break
            pfn = self._data_page()
            if pfn is None:
                break
            if self.step("set_pte_at", mm=mm.mm, addr=where, pte=pt.pfn_pte(pfn, prot)) == 0:
                mapped[where] = pfn
            else:
                self._release(pfn)

    def do_unmap(self, mm: MmHandle, index: int, addr: int, pages: int) -> None:
        """Clear ``pages`` entries from a mapped page (or ``addr``), free their data pages,
        then free_pgtables with the floor and ceiling the remaining mappings give: munmap's
        order [4.6: mm/mmap.c unmap_region]."""
        self.trace.rule("unmap", mm=mm, index=index, addr=addr, pages=pages)
        mapped = self.mapped.setdefault(mm.mm, {})
        addr = self._pick(mm, index, addr)
        end = min(addr + pages * pt.PAGE_SIZE, pt.TASK_SIZE_MAX)
        for where in range(addr, end, pt.PAGE_SIZE):
            self.step("ptep_get_and_clear", mm=mm.mm, addr=where)
            if where in mapped:
                self._release(mapped.pop(where))
        if addr < end:
            floor, ceiling = self._bounds(mm.mm, addr, end)
            self.step("free_pgtables", mm=mm.mm, start=addr, end=end, floor=floor,
                      ceiling=ceiling)

    def do_free_pgtables(self, mm: MmHandle, index: int, addr: int, align: bool, pages: int,
                         below: int, above: int) -> None:
        """free_pgtables with bounds of the test's choosing: a table still in use is refused.

        The range starts at a mapped page (or ``addr``), pulled down to its PMD when
        ``align`` is set: a PMD-aligned end that meets the ceiling is where free_pgd_range's
        end and ceiling tests are easiest to get wrong by one."""
        self.trace.rule("free_pgtables", mm=mm, index=index, addr=addr, align=align,
                        pages=pages, below=below, above=above)
        addr = self._pick(mm, index, addr)
        if align:
            addr &= pt.PMD_MASK
        end = addr + pages * pt.PAGE_SIZE
        ceiling = end + above if above >= 0 else pt.USER_PGTABLES_CEILING
        self.step("free_pgtables", mm=mm.mm, start=addr, end=end, floor=max(0, addr - below),
                  ceiling=ceiling)

    def do_protect(self, mm: MmHandle, index: int, addr: int, pages: int, prot: int) -> None:
        """change_protection over a range from a mapped page (or ``addr``): an mprotect
        upgrade or downgrade."""
        self.trace.rule("protect", mm=mm, index=index, addr=addr, pages=pages, prot=prot)
        addr = self._pick(mm, index, addr)
        self.step("change_protection", mm=mm.mm, start=addr,
                  end=addr + pages * pt.PAGE_SIZE, newprot=prot)

    def do_touch(self, mm: MmHandle, index: int, addr: int, op: str) -> None:
        """An in-place update (write-protect, test-and-clear-young, clean) of an entry."""
        self.trace.rule("touch", mm=mm, index=index, addr=addr, op=op)
        self.step(op, mm=mm.mm, addr=self._pick(mm, index, addr))

    def do_set_entry(self, mm: MmHandle, index: int, addr: int, modifier: str) -> None:
        """Read an entry back with walk, change it with one of 4.6's helpers, store it again.

        Only present entries are changed: on a non-present one bit 8 is PROTNONE, so
        pte_mkglobal would turn the caller's garbage into a present entry mapping a page the
        caller never held (the caller's bug, not the implementation's)."""
        self.trace.rule("set_entry", mm=mm, index=index, addr=addr, modifier=modifier)
        where = self._pick(mm, index, addr)
        level, value = self.step("walk", mm=mm.mm, addr=where)
        if level == Level.PTE and pt.pte_present(value):
            self.step("set_pte_at", mm=mm.mm, addr=where, pte=MODIFIERS[modifier](value))

    def do_walk(self, mm: MmHandle, index: int, addr: int) -> None:
        """Walk to a mapped page or to ``addr``."""
        self.trace.rule("walk", mm=mm, index=index, addr=addr)
        self.step("walk", mm=mm.mm, addr=self._pick(mm, index, addr))

    def do_alloc_table(self, mm: MmHandle, addr: int, op: str) -> None:
        """pud_alloc, pmd_alloc or pte_alloc on its own: tables with nothing mapped yet."""
        self.trace.rule("alloc_table", mm=mm, addr=addr, op=op)
        self.step(op, mm=mm.mm, addr=addr)

    def do_bad_address(self, mm: MmHandle, addr: int, op: str) -> None:
        """Any address operation on an address no user mm may map."""
        self.trace.rule("bad_address", mm=mm, addr=addr, op=op)
        self.step(op, **self._args(op, mm.mm, addr, pt.pfn_pte(1, pt.PAGE_SHARED)))

    def do_bad_entry(self, mm: MmHandle, index: int, addr: int, pte: int) -> None:
        """set_pte_at of any 64-bit value (undefined bits, wide pfns) or where no table is.
        A value the contract accepts is made non-present first: a present entry mapping a
        page the machine does not hold would be the caller's bug, not the implementation's."""
        self.trace.rule("bad_entry", mm=mm, index=index, addr=addr, pte=pte)
        if not pt.leaf_entry_refused(pte):
            pte &= ~(pt._PAGE_PRESENT | pt._PAGE_PROTNONE)
        self.step("set_pte_at", mm=mm.mm, addr=self._pick(mm, index, addr), pte=pte)

    def do_dead_mm(self, mm: int, op: str) -> None:
        """Any operation on an mm id that is not live (never was, or torn down)."""
        self.trace.rule("dead_mm", mm=mm, op=op)
        if mm in self.view.by_mm:
            return
        self.step(op, **self._args(op, mm, ANCHORS[0], 0))

    def do_teardown(self, mm: MmHandle) -> None:
        """mm_teardown, then the data pages go back (exit_mmap's zap put them)."""
        self.trace.rule("teardown", mm=mm)
        self.step("mm_teardown", mm=mm.mm)
        for pfn in self.mapped.pop(mm.mm, {}).values():
            self._release(pfn)

    @staticmethod
    def _args(op: str, mm: int, addr: int, value: int) -> dict[str, int]:
        if op == "set_pte_at":
            return {"mm": mm, "addr": addr, "pte": value}
        if op == "change_protection":
            return {"mm": mm, "start": addr & ~(pt.PAGE_SIZE - 1),
                    "end": (addr & ~(pt.PAGE_SIZE - 1)) + pt.PAGE_SIZE,
                    "newprot": pt.PAGE_READONLY}
        if op == "free_pgtables":
            return {"mm": mm, "start": 0, "end": pt.PMD_SIZE, "floor": 0, "ceiling": 0}
        if op == "mm_teardown":
            return {"mm": mm}
        return {"mm": mm, "addr": addr}


def render_tables(view: PageTableView, mm: int | None, limit: int = 16) -> str:
    """One line per table of the mm (or of every mm), parents before children."""
    lines = [f"  mm{m.id}: pgd {m.pgd:#x} nr_ptes={m.nr_ptes} nr_pmds={m.nr_pmds}"
             for m in view.mms if mm is None or m.id == mm]
    tables = sorted((t for t in view.tables if mm is None or t.mm == mm),
                    key=lambda t: (t.mm, t.base, -t.level))
    for table in tables[:limit]:
        shown = " ".join(f"[{i}]={v:#x}" for i, v in table.entries[:4])
        more = f" (+{len(table.entries) - 4})" if len(table.entries) > 4 else ""
        lines.append(f"  {'  ' * (4 - table.level)}mm{table.mm} {table.level.name} "
                     f"{table.pfn:#x} covers {table.base:#x}: {shown or 'empty'}{more}")
    if len(tables) > limit:
        lines.append(f"  ... {len(tables) - limit} more tables")
    return "\n".join(lines) or "  (no mms)"


def _show(value: Any) -> str:
    return hex(value) if isinstance(value, int) and value > 0 else repr(value)


def addresses() -> st.SearchStrategy[int]:
    """Page addresses clustered near the anchors (some with a byte offset)."""
    return st.builds(lambda anchor, offset, byte: max(0, min(
        anchor + offset * pt.PAGE_SIZE, pt.TASK_SIZE_MAX - pt.PAGE_SIZE)) + byte,
        st.sampled_from(ANCHORS), st.integers(-MAX_OFFSET, MAX_OFFSET),
        st.sampled_from([0, 0, 0, 0x123]))


def page_addresses() -> st.SearchStrategy[int]:
    """As addresses(), page aligned."""
    return addresses().map(lambda a: a & ~(pt.PAGE_SIZE - 1))


def make_pagetable_machine(spec: MachineSpec) -> type[PageTableMachineBase]:
    """A machine class for one implementation, mode and machine."""
    mms = PageTableMachineBase.mms
    runs = st.integers(1, MAX_RUN)
    prots = st.sampled_from(PROTS)
    address_ops = st.sampled_from(["pud_alloc", "pmd_alloc", "pte_alloc", "set_pte_at",
                                   "ptep_get_and_clear", *IN_PLACE, "walk"])

    class PageTableMachine(PageTableMachineBase):
        @initialize(target=mms, addr=page_addresses(), pages=runs, prot=prots)
        def first_mm(self, addr: int, pages: int, prot: int) -> Any:
            mm = self.do_mm_alloc()
            if isinstance(mm, MmHandle):
                self.do_map(mm, addr, pages, prot)
            return mm

        @precondition(lambda self: len(self.mapped) < 4)
        @rule(target=mms)
        def mm_alloc(self) -> Any:
            return self.do_mm_alloc()

        @rule(mm=mms, addr=page_addresses(), pages=runs, prot=prots)
        def map(self, mm: MmHandle, addr: int, pages: int, prot: int) -> None:
            self.do_map(mm, addr, pages, prot)

        @rule(mm=mms, index=st.integers(0, 1 << 10), addr=page_addresses(),
              pages=st.integers(1, 2 * MAX_RUN))
        def unmap(self, mm: MmHandle, index: int, addr: int, pages: int) -> None:
            self.do_unmap(mm, index, addr, pages)

        @rule(mm=mms, index=st.integers(0, 1 << 10), addr=page_addresses(),
              align=st.booleans(),
              pages=st.one_of(st.just(512), st.sampled_from([1024, 511, 513]),
                              st.integers(1, 1200)),
              below=st.sampled_from([0, pt.PAGE_SIZE, pt.PMD_SIZE, pt.PUD_SIZE, 1 << 48]),
              above=st.sampled_from([0, pt.PAGE_SIZE, -1, pt.PMD_SIZE, pt.PUD_SIZE]))
        def free_pgtables(self, mm: MmHandle, index: int, addr: int, align: bool, pages: int,
                          below: int, above: int) -> None:
            self.do_free_pgtables(mm, index, addr, align, pages, below, above)

        @rule(mm=mms, index=st.integers(0, 1 << 10), addr=page_addresses(),
              pages=st.integers(1, 2 * MAX_RUN), prot=prots)
        def protect(self, mm: MmHandle, index: int, addr: int, pages: int, prot: int) -> None:
            self.do_protect(mm, index, addr, pages, prot)

        @rule(mm=mms, index=st.integers(0, 1 << 10), addr=addresses(),
              op=st.sampled_from(IN_PLACE))
        def touch(self, mm: MmHandle, index: int, addr: int, op: str) -> None:
            self.do_touch(mm, index, addr, op)

        @rule(mm=mms, index=st.integers(0, 1 << 10), addr=addresses(),
              modifier=st.sampled_from(sorted(MODIFIERS)))
        def set_entry(self, mm: MmHandle, index: int, addr: int, modifier: str) -> None:
            self.do_set_entry(mm, index, addr, modifier)

        @rule(mm=mms, index=st.integers(0, 1 << 10), addr=addresses())
        def walk(self, mm: MmHandle, index: int, addr: int) -> None:
            self.do_walk(mm, index, addr)

        @rule(mm=mms, addr=addresses(),
              op=st.sampled_from(["pud_alloc", "pmd_alloc", "pte_alloc"]))
        def alloc_table(self, mm: MmHandle, addr: int, op: str) -> None:
            self.do_alloc_table(mm, addr, op)

        @rule(mm=mms, addr=st.sampled_from(BAD_ADDRESSES), op=address_ops)
        def bad_address(self, mm: MmHandle, addr: int, op: str) -> None:
            self.do_bad_address(mm, addr, op)

        @rule(mm=mms, index=st.integers(0, 1 << 10), addr=addresses(),
              pte=st.one_of(st.integers(0, pt.ENTRY_MASK),
                            st.builds(pt.pfn_pte, st.integers(pt.MAX_PHYS_PFN - 2,
                                                              pt.MAX_PHYS_PFN << 6),
                                      st.sampled_from(pt.PROTECTION_MAP))))
        def bad_entry(self, mm: MmHandle, index: int, addr: int, pte: int) -> None:
            self.do_bad_entry(mm, index, addr, pte)

        @precondition(lambda self: bool(self.mapped))
        @rule(mm=st.integers(-1, 8), op=st.sampled_from(list(OPERATIONS[1:])))
        def dead_mm(self, mm: int, op: str) -> None:
            self.do_dead_mm(mm, op)

        @rule(mm=consumes(mms))
        def teardown_mm(self, mm: MmHandle) -> None:
            self.do_teardown(mm)

    PageTableMachine.spec = spec
    PageTableMachine.__name__ = PageTableMachine.__qualname__ = (
        f"PageTable{spec.mode.capitalize()}_{identifier(spec.impl_name)}")
    return PageTableMachine


__all__ = ["MmHandle", "PageTableMachineBase", "make_pagetable_machine", "render_tables"]
