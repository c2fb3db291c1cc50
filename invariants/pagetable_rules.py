"""Operation rules of the page tables, PAGETABLE-R1 .. PAGETABLE-R9 (``specs/pagetable.md``).

A rule judges one step from its arguments, its result and the views before and after.  The
expected result and the expected after-state follow from the view before the step alone, so
contract mode can judge an implementation that places its table pages differently.
"""

from __future__ import annotations

from typing import Any

import attrs

from invariants.pagetable import SPAN_SHIFT, describe, is_free
from invariants.registry import step_rule
from specs import pte as pt
from specs.buddy import PageAllocator
from specs.errno import Errno
from specs.errno import describe as errno_name
from specs.machine import MachineConfig
from specs.pagetable import Level, PageTableView, TableView, index_at

EINVAL = -Errno.EINVAL
EFAULT = -Errno.EFAULT
ENOMEM = -Errno.ENOMEM
EBUSY = -Errno.EBUSY

#: operations that name one address of one mm
ADDRESS_OPS = frozenset({"pud_alloc", "pmd_alloc", "pte_alloc", "set_pte_at",
                         "ptep_get_and_clear", "ptep_set_wrprotect",
                         "ptep_test_and_clear_young", "ptep_mkclean", "walk"})
MM_OPS = ADDRESS_OPS | {"change_protection", "free_pgtables", "mm_teardown"}
ALLOC_LEVEL = {"pud_alloc": Level.PUD, "pmd_alloc": Level.PMD, "pte_alloc": Level.PTE}
IN_PLACE_OPS = frozenset({"ptep_set_wrprotect", "ptep_test_and_clear_young", "ptep_mkclean"})


@attrs.frozen
class PageTableStep:
    """One operation as a step rule judges it."""

    op: str
    args: dict[str, int]
    result: Any
    before: PageTableView
    after: PageTableView
    #: the page allocator the implementation takes its table pages from (state after the step)
    pages: PageAllocator
    config: MachineConfig


# ---------------------------------------------------------------------------------------------
# Comparing two views
# ---------------------------------------------------------------------------------------------


def entry_changes(before: PageTableView, after: PageTableView) -> dict[tuple[int, int],
                                                                      tuple[int, int]]:
    """(table pfn, index) -> (old, new) for every entry that differs in a table present in
    both views."""
    changes = {}
    for pfn, old_table in before.by_pfn.items():
        new_table = after.by_pfn.get(pfn)
        if new_table is None or new_table.entries == old_table.entries:
            continue
        old, new = dict(old_table.entries), dict(new_table.entries)
        for index in old.keys() | new.keys():
            if old.get(index, 0) != new.get(index, 0):
                changes[(pfn, index)] = (old.get(index, 0), new.get(index, 0))
    return changes


def difference(before: PageTableView, after: PageTableView, limit: int = 4) -> str:
    """The first differences between two views, in words ("" when equal)."""
    if before == after:
        return ""
    found = []
    added = sorted(after.by_pfn.keys() - before.by_pfn.keys())
    removed = sorted(before.by_pfn.keys() - after.by_pfn.keys())
    found += [f"table {describe(after.by_pfn[p])} appeared" for p in added]
    found += [f"table {describe(before.by_pfn[p])} disappeared" for p in removed]
    for (pfn, index), (old, new) in sorted(entry_changes(before, after).items()):
        found.append(f"{describe(before.by_pfn[pfn])} slot {index}: {old:#x} -> {new:#x}")
    for pfn, table in sorted(before.by_pfn.items()):
        moved = after.by_pfn.get(pfn)
        if moved is not None and attrs.evolve(moved, entries=table.entries) != table:
            found.append(f"table {pfn:#x} changed its identity: {table} -> {moved}")
    if before.mms != after.mms:
        found.append(f"mms {before.mms} -> {after.mms}")
    return "; ".join(found[:limit]) + (f"; ... {len(found) - limit} more" if len(found) > limit
                                       else "")


def unchanged(step: PageTableStep, why: str) -> list[str]:
    """The after-view equals the before-view."""
    diff = difference(step.before, step.after)
    return [f"{why}, yet the tables changed: {diff}"] if diff else []


def _call(step: PageTableStep) -> str:
    args = ", ".join(f"{k}={v:#x}" if k != "mm" else f"{k}={v}" for k, v in step.args.items())
    return f"{step.op}({args})"


def _res(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_res(v) for v in value) + ")"
    if isinstance(value, int) and value < 0:
        return errno_name(value)
    return f"{value:#x}" if isinstance(value, int) else repr(value)


def refusal(step: PageTableStep) -> int:
    """The refusal PAGETABLE-R2 or R1 requires of this step, or 0."""
    if step.args.get("mm") not in step.before.by_mm:
        return EINVAL
    if step.op in ADDRESS_OPS and not pt.is_user_address(step.args["addr"]):
        return EFAULT
    return 0


def _result_code(step: PageTableStep) -> Any:
    return step.result[0] if step.op == "walk" and isinstance(step.result, tuple) else step.result


def expect(step: PageTableStep, want: Any, why: str) -> list[str]:
    """The result is ``want``."""
    if step.result != want:
        return [f"{_call(step)} returned {_res(step.result)}; {why}, so 4.6's answer is "
                f"{_res(want)}"]
    return []


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


@step_rule("PAGETABLE-R1", "addresses outside user space are refused", ops=ADDRESS_OPS)
def bad_address(step: PageTableStep) -> list[str]:
    """A non-canonical address, a kernel address or the top user page gets -EFAULT and
    changes nothing."""
    if refusal(step) != EFAULT:
        return []
    want = (EFAULT, 0) if step.op == "walk" else EFAULT
    why = f"{step.args['addr']:#x} is not below TASK_SIZE_MAX ({pt.TASK_SIZE_MAX:#x})"
    return expect(step, want, why) + unchanged(step, "the call was refused")


@step_rule("PAGETABLE-R2", "calls on a dead mm are refused", ops=MM_OPS)
def dead_mm(step: PageTableStep) -> list[str]:
    """An mm id that mm_alloc never returned, or that mm_teardown took down, gets -EINVAL and
    changes nothing."""
    if refusal(step) != EINVAL:
        return []
    want = (EINVAL, 0) if step.op == "walk" else EINVAL
    return expect(step, want, f"mm{step.args['mm']} is not live") + unchanged(
        step, "the call was refused")


# ---------------------------------------------------------------------------------------------
# Allocation
# ---------------------------------------------------------------------------------------------


@step_rule("PAGETABLE-R3", "table allocation fills in exactly the missing tables",
           ops={"mm_alloc", *ALLOC_LEVEL})
def allocation(step: PageTableStep) -> list[str]:
    """mm_alloc adds one mm with an empty PGD; pud/pmd/pte_alloc add the missing tables on the
    path to ``addr``, top first, each zeroed but for the path entry, linked with one new entry
    and counted; nothing else changes.  -ENOMEM may leave the upper tables it got."""
    before, after = step.before, step.after
    if step.op == "mm_alloc":
        return _mm_alloc(step)
    if refusal(step):
        return []
    mm, addr, target = step.args["mm"], step.args["addr"], ALLOC_LEVEL[step.op]
    if step.result not in (0, ENOMEM):
        return [f"{_call(step)} returned {_res(step.result)}; 0 or -ENOMEM expected"]
    problems = []
    removed = before.by_pfn.keys() - after.by_pfn.keys()
    if removed:
        problems.append(f"{_call(step)} removed tables {sorted(hex(p) for p in removed)}")
    new = [after.by_pfn[p] for p in sorted(after.by_pfn.keys() - before.by_pfn.keys())]
    path_slots = {}
    for table in new:
        shift = SPAN_SHIFT[Level(table.level + 1)]
        on_path = (table.mm == mm and target <= table.level < Level.PGD
                   and table.base == addr >> shift << shift)
        if not on_path:
            problems.append(f"{_call(step)} added {describe(table)}, which is not on the "
                            f"path to {addr:#x} above the {target.name} level")
        if any(index != index_at(table.level, addr) for index, _v in table.entries):
            problems.append(f"{_call(step)}: new {describe(table)} holds entries off the path: "
                            f"{table.entries}")
        path_slots[(table.parent, table.slot)] = table.pfn
    for (pfn, index), (old, new_value) in entry_changes(before, after).items():
        if old != 0 or path_slots.get((pfn, index)) != pt.pgd_pfn(new_value):
            problems.append(f"{_call(step)} changed {describe(before.by_pfn[pfn])} slot "
                            f"{index}: {old:#x} -> {new_value:#x}")
    if step.result == 0:
        level, _value = after.entry(mm, addr) if mm in after.by_mm else (Level.PGD, 0)
        if level > target:
            problems.append(f"{_call(step)} returned 0 but the walk to {addr:#x} still stops "
                            f"at the {Level(level).name} level")
    added = {lvl: sum(1 for t in new if t.level == lvl) for lvl in Level}
    old_mm, new_mm = before.by_mm[mm], after.by_mm.get(mm)
    want = attrs.evolve(old_mm, nr_ptes=old_mm.nr_ptes + added[Level.PTE],
                        nr_pmds=old_mm.nr_pmds + added[Level.PMD])
    if new_mm != want:
        problems.append(f"{_call(step)}: mm became {new_mm}, expected {want}")
    if tuple(m for m in after.mms if m.id != mm) != tuple(m for m in before.mms if m.id != mm):
        problems.append(f"{_call(step)} changed other mms")
    return problems


def _mm_alloc(step: PageTableStep) -> list[str]:
    before, after = step.before, step.after
    if step.result is None:
        return unchanged(step, "mm_alloc returned None (no page for the PGD)")
    if step.result in before.by_mm or step.result not in after.by_mm:
        return [f"mm_alloc() returned {step.result}, which is not a new live mm"]
    mm = after.by_mm[step.result]
    problems = []
    if (mm.nr_ptes, mm.nr_pmds) != (0, 0):
        problems.append(f"new mm{mm.id} has nr_ptes={mm.nr_ptes} nr_pmds={mm.nr_pmds}")
    pgd = after.by_pfn.get(mm.pgd)
    if pgd is None or pgd.entries or pgd.level != Level.PGD or mm.pgd in before.by_pfn:
        problems.append(f"new mm{mm.id}'s pgd {mm.pgd:#x} is not a new, empty PGD: {pgd}")
    rest = PageTableView(mms=tuple(m for m in after.mms if m.id != mm.id),
                         tables=tuple(t for t in after.tables if t.pfn != mm.pgd))
    diff = difference(before, rest)
    if diff:
        problems.append(f"mm_alloc() changed existing tables: {diff}")
    return problems


# ---------------------------------------------------------------------------------------------
# Leaf entries
# ---------------------------------------------------------------------------------------------


def _leaf_slot(step: PageTableStep) -> tuple[TableView, int] | None:
    """The PTE table and index the step names, as the view before shows them."""
    mm, addr = step.args["mm"], step.args["addr"]
    table = step.before.by_pfn.get(step.before.by_mm[mm].pgd)
    while table is not None and table.level > Level.PTE:
        value = dict(table.entries).get(index_at(table.level, addr), 0)
        table = step.before.by_pfn.get(pt.pgd_pfn(value)) if value else None
    return None if table is None else (table, index_at(Level.PTE, addr))


def only_change(step: PageTableStep, table: TableView, index: int, want: int) -> list[str]:
    """After the step the entry holds ``want`` and nothing else in any table changed."""
    old = dict(table.entries).get(index, 0)
    expected = {(table.pfn, index): (old, want)} if old != want else {}
    actual = entry_changes(step.before, step.after)
    same_shape = (step.before.mms == step.after.mms
                  and step.before.by_pfn.keys() == step.after.by_pfn.keys())
    if actual == expected and same_shape:
        return []
    return [f"{_call(step)}: slot {index} of {describe(table)} should go {old:#x} -> "
            f"{want:#x} and nothing else change; what changed: "
            f"{difference(step.before, step.after) or 'nothing'}"]


@step_rule("PAGETABLE-R4", "set_pte_at stores exactly the entry", ops={"set_pte_at"})
def set_entry(step: PageTableStep) -> list[str]:
    """The entry is stored as given and nothing else changes; a value with undefined bits
    (a pfn wider than the physical mask spills into them) gets -EINVAL, and an address with
    no PTE table -EFAULT, both changing nothing."""
    if refusal(step):
        return []
    value = step.args["pte"]
    if pt.leaf_entry_refused(value):
        return expect(step, EINVAL, f"{value:#x} has bits outside the defined set") + \
            unchanged(step, "the entry was refused")
    slot = _leaf_slot(step)
    if slot is None:
        return expect(step, EFAULT, f"there is no PTE table for {step.args['addr']:#x}") + \
            unchanged(step, "there is no PTE table")
    return expect(step, 0, "the PTE table exists") + only_change(step, *slot, value)


@step_rule("PAGETABLE-R5", "ptep_get_and_clear returns and clears the entry",
           ops={"ptep_get_and_clear"})
def get_and_clear(step: PageTableStep) -> list[str]:
    """The old value comes back and the entry becomes none; with no PTE table, -EFAULT."""
    if refusal(step):
        return []
    slot = _leaf_slot(step)
    if slot is None:
        return expect(step, EFAULT, f"there is no PTE table for {step.args['addr']:#x}") + \
            unchanged(step, "there is no PTE table")
    table, index = slot
    old = dict(table.entries).get(index, 0)
    return expect(step, old, "that is what the entry held") + only_change(step, table, index, 0)


@step_rule("PAGETABLE-R6", "in-place updates change exactly 4.6's bits",
           ops={*IN_PLACE_OPS, "change_protection"})
def in_place(step: PageTableStep) -> list[str]:
    """ptep_set_wrprotect clears RW, ptep_test_and_clear_young clears ACCESSED (reporting it),
    ptep_mkclean write-protects and cleans a dirty or writable present entry, and
    change_protection applies pte_modify to every present entry of the range; every other bit
    and entry stays."""
    if refusal(step):
        return []
    if step.op == "change_protection":
        return _change_protection(step)
    slot = _leaf_slot(step)
    if slot is None:
        return expect(step, EFAULT, f"there is no PTE table for {step.args['addr']:#x}") + \
            unchanged(step, "there is no PTE table")
    table, index = slot
    old = dict(table.entries).get(index, 0)
    if step.op == "ptep_set_wrprotect":
        want, result = pt.pte_wrprotect(old), 0
    elif step.op == "ptep_test_and_clear_young":
        want, result = pt.pte_mkold(old), int(pt.pte_young(old))
    elif pt.pte_present(old) and (pt.pte_dirty(old) or pt.pte_write(old)):
        want, result = pt.pte_mkclean(pt.pte_wrprotect(old)), 1
    else:
        want, result = old, 0
    return expect(step, result, f"the entry held {old:#x}") + only_change(step, table, index,
                                                                         want)


def _change_protection(step: PageTableStep) -> list[str]:
    mm, start, end, newprot = (step.args[k] for k in ("mm", "start", "end", "newprot"))
    if _bad_range(start, end) or pt.leaf_entry_refused(newprot):
        return expect(step, EINVAL, "the range or the protection is malformed") + unchanged(
            step, "the call was refused")
    want = {}
    for table in step.before.tables:
        if table.mm != mm or table.level != Level.PTE:
            continue
        for index, value in table.entries:
            addr = table.base + (index << pt.PAGE_SHIFT)
            if start <= addr < end and pt.pte_present(value):
                want[(table.pfn, index)] = (value, pt.pte_modify(value, newprot))
    problems = expect(step, len(want), f"{len(want)} present entries lie in the range")
    changes = entry_changes(step.before, step.after)
    want = {key: pair for key, pair in want.items() if pair[0] != pair[1]}
    if changes != want or step.before.by_pfn.keys() != step.after.by_pfn.keys():
        wrong = sorted(set(changes.items()) ^ set(want.items()))[:4]
        shown = "; ".join(f"{describe(step.before.by_pfn[pfn])} slot {i}: "
                          f"{'wanted' if ((pfn, i), (o, n)) in want.items() else 'got'} "
                          f"{o:#x} -> {n:#x}" for (pfn, i), (o, n) in wrong)
        problems.append(f"{_call(step)} did not apply pte_modify to exactly the present "
                        f"entries of the range: {shown or difference(step.before, step.after)}")
    return problems


def _bad_range(start: int, end: int) -> bool:
    return (start % pt.PAGE_SIZE != 0 or end % pt.PAGE_SIZE != 0 or not 0 <= start < end
            or end > pt.TASK_SIZE_MAX)


# ---------------------------------------------------------------------------------------------
# Freeing
# ---------------------------------------------------------------------------------------------


def freed_by_rule(view: PageTableView, mm: int, start: int, end: int, floor: int,
                  ceiling: int) -> set[int]:
    """The table pfns free_pgd_range frees, from its rule rather than its loop: the range is
    first narrowed to whole PMDs that [floor, ceiling) leaves alone; a PTE page goes when its
    2 MiB lies in that range, a PMD (PUD) page when the walk reaches it and its whole 1 GiB
    (512 GiB) lies in [floor, ceiling) [4.6: mm/memory.c free_pgd_range, free_pud_range,
    free_pmd_range]."""
    addr = start & pt.PMD_MASK
    if addr < floor:
        addr += pt.PMD_SIZE
    ceiling_pmd = ceiling & pt.PMD_MASK
    if ceiling and not ceiling_pmd:
        return set()
    top = (ceiling_pmd - 1) & pt.ENTRY_MASK
    if end - 1 > top:
        end -= pt.PMD_SIZE
    if addr > end - 1:
        return set()
    freed = set()
    for table in view.tables:
        if table.mm != mm or table.level == Level.PGD:
            continue
        span = 1 << (SPAN_SHIFT[table.level] + 9)
        lo, hi = max(addr, table.base), min(end, table.base + span)  # the walk inside it
        if lo >= hi:
            continue
        if table.level == Level.PTE:
            freed.add(table.pfn)
            continue
        ceiling_here = ceiling & ~(span - 1)
        if table.base >= floor and (ceiling == 0 or (
                ceiling_here and hi - 1 <= ceiling_here - 1)):
            freed.add(table.pfn)
    return {pfn for pfn in freed if _reachable(view, pfn)}


def _reachable(view: PageTableView, pfn: int) -> bool:
    """The table hangs from its mm's PGD (the walk only finds what is linked)."""
    table = view.by_pfn.get(pfn)
    while table is not None and table.level != Level.PGD:
        parent = view.by_pfn.get(table.parent)
        if parent is None or dict(parent.entries).get(table.slot) != pt.mk_table_entry(
                table.pfn):
            return False
        table = parent
    return table is not None


def _still_used(view: PageTableView, doomed: set[int]) -> list[str]:
    """Entries in tables about to be freed that are not themselves being freed."""
    used = []
    for pfn in sorted(doomed):
        table = view.by_pfn[pfn]
        for index, value in table.entries:
            if table.level == Level.PTE or pt.pgd_pfn(value) not in doomed:
                used.append(f"{describe(table)} slot {index} = {value:#x}")
    return used


def removal(step: PageTableStep, mm: int, doomed: set[int]) -> list[str]:
    """After the step exactly ``doomed`` is gone, the entries pointing at it are cleared, the
    counters dropped, and each page went back to the allocator."""
    before, after = step.before, step.after
    problems = []
    gone = before.by_pfn.keys() - after.by_pfn.keys()
    if gone != doomed or after.by_pfn.keys() - before.by_pfn.keys():
        extra = sorted(hex(p) for p in gone - doomed)
        kept = sorted(hex(p) for p in doomed - gone)
        problems.append(f"{_call(step)} should free exactly {sorted(hex(p) for p in doomed)}; "
                        f"also freed {extra}, kept {kept}")
    want_changes = {}
    for pfn in doomed:
        table = before.by_pfn[pfn]
        if table.parent not in doomed and table.parent in before.by_pfn:
            want_changes[(table.parent, table.slot)] = (pt.mk_table_entry(pfn), 0)
    changes = {k: v for k, v in entry_changes(before, after).items() if k[0] not in doomed}
    if step.op == "free_pgtables" and changes != want_changes:
        problems.append(f"{_call(step)} should clear exactly the entries that pointed to the "
                        f"freed tables; changes: {difference(before, after)}")
    if step.op == "free_pgtables":
        old_mm = before.by_mm[mm]
        lost = [before.by_pfn[p].level for p in doomed]
        want = attrs.evolve(old_mm, nr_ptes=old_mm.nr_ptes - lost.count(Level.PTE),
                            nr_pmds=old_mm.nr_pmds - lost.count(Level.PMD))
        if after.by_mm.get(mm) != want:
            problems.append(f"{_call(step)}: mm became {after.by_mm.get(mm)}, expected {want}")
    leaked = [hex(p) for p in sorted(doomed & gone) if not is_free(step.pages, p)]
    if leaked:
        problems.append(f"{_call(step)}: table pages {leaked} left the tables but the page "
                        f"allocator still counts a reference (leaked)")
    return problems


@step_rule("PAGETABLE-R7", "free_pgtables frees what the floor/ceiling rule frees",
           ops={"free_pgtables"})
def free_tables(step: PageTableStep) -> list[str]:
    """Exactly the tables free_pgd_range's floor/ceiling rule selects are freed and returned to
    the page allocator; malformed bounds get -EINVAL and a table that still holds a live entry
    -EBUSY, both before anything is freed."""
    if refusal(step):
        return []
    mm, start, end, floor, ceiling = (step.args[k] for k in
                                      ("mm", "start", "end", "floor", "ceiling"))
    if _bad_range(start, end) or floor % pt.PAGE_SIZE or ceiling % pt.PAGE_SIZE or not (
            0 <= floor <= start) or not (ceiling == 0 or end <= ceiling <= pt.TASK_SIZE_MAX):
        return expect(step, EINVAL, "the bounds are malformed") + unchanged(
            step, "the call was refused")
    doomed = freed_by_rule(step.before, mm, start, end, floor, ceiling)
    used = _still_used(step.before, doomed)
    if used:
        return expect(step, EBUSY, f"tables to be freed are still in use ({used[0]})") + \
            unchanged(step, "the call was refused")
    return expect(step, 0, "nothing to be freed is in use") + removal(step, mm, doomed)


@step_rule("PAGETABLE-R8", "teardown returns every table page", ops={"mm_teardown"})
def teardown(step: PageTableStep) -> list[str]:
    """mm_teardown removes the mm and every table it owned, PGD included, gives each page back
    to the allocator, and leaves every other mm alone."""
    if refusal(step):
        return []
    mm = step.args["mm"]
    problems = expect(step, 0, f"mm{mm} is live")
    if mm in step.after.by_mm:
        problems.append(f"mm_teardown(mm={mm}) returned but mm{mm} is still live")
    owned = {t.pfn for t in step.before.tables if t.mm == mm}
    others = PageTableView(mms=tuple(m for m in step.before.mms if m.id != mm),
                           tables=tuple(t for t in step.before.tables if t.mm != mm))
    diff = difference(others, step.after)
    if diff:
        problems.append(f"mm_teardown(mm={mm}) should leave other mms alone: {diff}")
    return problems + removal(step, mm, owned)


# ---------------------------------------------------------------------------------------------
# Walking
# ---------------------------------------------------------------------------------------------


@step_rule("PAGETABLE-R9", "walk reports the entry the tables hold", ops={"walk"})
def walk(step: PageTableStep) -> list[str]:
    """walk returns the level where the walk to ``addr`` stops and the entry read there, as
    the view shows them, and changes nothing."""
    if refusal(step):
        return []
    level, value = step.before.entry(step.args["mm"], step.args["addr"])
    return expect(step, (int(level), value), "that is where the tables end") + unchanged(
        step, "a walk only reads")
