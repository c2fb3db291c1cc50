"""Hand-computed 4.6 behaviour of the TLB model, on refmodel and fastmodel alike.

Each test sets up a few table entries, drives the TLB through a short fixed sequence and
checks the exact outcome 4.6's ``arch/x86/mm/tlb.c`` (and the x86 MMU) gives, worked out by
hand from the source: the 33-page ceiling, the remote full flush of a sender that does not
run the mm, lazy CPUs leaving on an IPI, the ``end == 0`` quirk of native_flush_tlb_others,
the fill rule and its error codes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastmodel.tlb import FastTlb
from refmodel.tlb import DictTables, RefTlb
from specs.errno import Errno
from specs.machine import MachineConfig
from specs.pte import _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_GLOBAL, _PAGE_SPECIAL, PAGE_SIZE
from specs.tlb import (
    INIT_MM,
    PF_INSTR,
    PF_PROT,
    PF_USER,
    PF_WRITE,
    TLB_FLUSH_ALL,
    VM_HUGETLB,
    Access,
    Outcome,
    Tlb,
    TlbEvents,
)
from stateful_tests.tlb_machine import (
    KERNEL_BASE,
    PAGE_KERNEL,
    PAGE_READONLY,
    PAGE_SHARED,
    PAGE_SHARED_EXEC,
    USER_BASE,
)

EINVAL = -Errno.EINVAL
THREE = MachineConfig(name="three", nr_pages=4096, nr_cpus=3)

Factory = Callable[[MachineConfig, DictTables], Any]


@pytest.fixture(params=[RefTlb, FastTlb], ids=["refmodel", "fastmodel"])
def make(request: pytest.FixtureRequest) -> Callable[..., tuple[Any, DictTables]]:
    """A TLB of three CPUs over tables with user pages 0..47 of mm 1 and 2 mapped."""
    factory: Factory = request.param

    def build(pages: int = 48, prot: int = PAGE_SHARED) -> tuple[Any, DictTables]:
        tables = DictTables()
        for mm in (1, 2):
            for page in range(pages):
                tables.set_pte(mm, va(page), (0x100 * mm + page) << 12 | prot)
        return factory(THREE, tables), tables

    return build


def va(page: int) -> int:
    """User page address."""
    return USER_BASE + page * PAGE_SIZE


def cached(tlb: Tlb, cpu: int) -> list[int]:
    """Page indexes (relative to USER_BASE) of cpu's user entries."""
    base = USER_BASE >> 12
    return [e.vpage - base for e in tlb.view().cpus[cpu].entries if e.vpage < 1 << 35]


def touch(tlb: Tlb, cpu: int, pages: range) -> None:
    """Read every page from cpu (each must fill)."""
    for page in pages:
        assert Outcome.FILL == tlb.access(cpu, va(page)).outcome


def test_boot_state(make: Callable[..., tuple[Any, DictTables]]) -> None:
    """Every CPU runs its idle thread: lazy on init_mm, swapper_pg_dir loaded, nothing
    cached, every mask empty, every counter 0; a user access faults (no user mm loaded)."""
    tlb, _ = make()
    view = tlb.view()
    assert [(INIT_MM, INIT_MM, True, ())] * 3 == [
        (c.active_mm, c.loaded_mm, c.lazy, c.entries) for c in view.cpus]
    assert () == view.mm_cpumask
    assert TlbEvents() == view.events
    assert Access(Outcome.PAGE_FAULT, error_code=PF_USER) == tlb.access(0, va(0))


def test_fill_sets_accessed_and_dirty(make: Callable[..., tuple[Any, DictTables]]) -> None:
    """A load fills with A set in the table; a store through the clean entry walks again and
    sets D; then stores hit."""
    tlb, tables = make()
    tables.set_pte(1, va(0), 0x105 << 12 | (PAGE_SHARED & ~_PAGE_ACCESSED))
    assert 0 == tlb.switch_mm(0, 1)
    load = tlb.access(0, va(0))
    assert (Outcome.FILL, 0x105) == (load.outcome, load.pfn)
    assert tables.lookup(1, va(0)) & _PAGE_ACCESSED
    assert not tables.lookup(1, va(0)) & _PAGE_DIRTY
    store = tlb.access(0, va(0), write=True)
    assert Outcome.FILL == store.outcome
    assert store.flags & _PAGE_DIRTY
    assert tables.lookup(1, va(0)) & _PAGE_DIRTY
    assert Outcome.HIT == tlb.access(0, va(0), write=True).outcome


def test_software_bits_never_cached(make: Callable[..., tuple[Any, DictTables]]) -> None:
    """SPECIAL is in the PTE but not in the TLB entry."""
    tlb, tables = make()
    tables.set_pte(1, va(3), 0x7 << 12 | PAGE_SHARED | _PAGE_SPECIAL)
    tlb.switch_mm(0, 1)
    assert not tlb.access(0, va(3)).flags & _PAGE_SPECIAL
    assert not tlb.view().cpus[0].entries[0].flags & _PAGE_SPECIAL


def test_fault_codes_and_spurious_fault(make: Callable[..., tuple[Any, DictTables]]) -> None:
    """Error codes as x86 pushes them; an upgrade without a flush costs one spurious fault
    (which drops the stale entry), then the store refills."""
    tlb, tables = make(prot=PAGE_READONLY)
    tlb.switch_mm(0, 1)
    assert PF_PROT | PF_WRITE | PF_USER == tlb.access(0, va(1), write=True).error_code
    assert PF_PROT | PF_USER | PF_INSTR == tlb.access(0, va(1), exec=True).error_code
    assert PF_USER == tlb.access(0, va(60)).error_code  # not mapped
    touch(tlb, 0, range(2, 3))
    tables.set_pte(1, va(2), tables.lookup(1, va(2)) | 0x2)  # pte_mkwrite, no flush
    assert Access(Outcome.PAGE_FAULT, error_code=PF_PROT | PF_WRITE | PF_USER) == \
        tlb.access(0, va(2), write=True)
    assert [] == [p for p in cached(tlb, 0) if p == 2]
    assert Outcome.FILL == tlb.access(0, va(2), write=True).outcome
    assert Outcome.GENERAL_PROTECTION == tlb.access(0, 1 << 47).outcome


def test_switch_keeps_only_global_entries(make: Callable[..., tuple[Any, DictTables]]) -> None:
    """switch_mm to another mm drops user entries and keeps the global kernel entry; the
    masks follow the CPU."""
    tlb, tables = make()
    tables.set_pte(0, KERNEL_BASE, 0x42 << 12 | PAGE_KERNEL)
    tlb.switch_mm(0, 1)
    touch(tlb, 0, range(4))
    assert Outcome.FILL == tlb.access(0, KERNEL_BASE).outcome
    tlb.switch_mm(0, 2)
    cpu0 = tlb.view().cpus[0]
    assert [KERNEL_BASE >> 12] == [e.vpage for e in cpu0.entries]
    assert cpu0.entries[0].flags & _PAGE_GLOBAL
    assert ((2, (0,)),) == tlb.view().mm_cpumask


def test_lazy_return_reloads_only_after_leave_mm(
        make: Callable[..., tuple[Any, DictTables]]) -> None:
    """Back from a kernel thread to the same mm: nothing reloaded while the CPU stayed in
    the mask; after an IPI made it leave_mm, it rejoins and CR3 is reloaded."""
    tlb, _ = make()
    tlb.switch_mm(0, 1)
    tlb.switch_mm(1, 1)
    touch(tlb, 1, range(3))
    tlb.enter_lazy_tlb(1)
    assert (1, 1, True) == (tlb.view().cpus[1].active_mm, tlb.view().cpus[1].loaded_mm,
                            tlb.view().cpus[1].lazy)
    tlb.switch_mm(1, 1)
    assert [0, 1, 2] == cached(tlb, 1)  # still in the mask: no reload
    tlb.enter_lazy_tlb(1)
    tlb.flush_tlb_page(0, 1, va(0))  # the IPI finds cpu1 lazy: leave_mm
    cpu1 = tlb.view().cpus[1]
    assert (1, INIT_MM, ()) == (cpu1.active_mm, cpu1.loaded_mm, cpu1.entries)
    assert ((1, (0,)),) == tlb.view().mm_cpumask
    assert PF_USER == tlb.access(1, va(5)).error_code  # swapper_pg_dir maps no user page
    tlb.switch_mm(1, 1)
    assert ((1, (0, 1)),) == tlb.view().mm_cpumask
    assert 1 == tlb.view().cpus[1].loaded_mm


@pytest.mark.parametrize(("pages", "kept"), [(33, [33, 34, 35]), (34, [])])
def test_the_33_page_ceiling(make: Callable[..., tuple[Any, DictTables]], pages: int,
                             kept: list[int]) -> None:
    """33 pages are INVLPG'd one by one here and remotely; 34 reload CR3 here and send a
    full flush."""
    tlb, _ = make()
    for cpu in (0, 1):
        tlb.switch_mm(cpu, 1)
        touch(tlb, cpu, range(36))
    assert 0 == tlb.flush_tlb_mm_range(0, 1, va(0), va(pages))
    assert kept == [p for p in cached(tlb, 0) if p >= pages] == [
        p for p in cached(tlb, 1) if p >= pages]
    assert [] == [p for p in cached(tlb, 0) + cached(tlb, 1) if p < pages]
    events = tlb.view().events
    assert (1, 1) == (events.nr_tlb_remote_flush, events.nr_tlb_remote_flush_received)
    assert (pages if pages == 33 else 0, 1 if pages == 34 else 0) == (
        events.nr_tlb_local_flush_one, events.nr_tlb_local_flush_all)


def test_hugetlb_range_is_a_full_flush(make: Callable[..., tuple[Any, DictTables]]) -> None:
    """VM_HUGETLB makes even a one-page range a full flush."""
    tlb, _ = make()
    tlb.switch_mm(0, 1)
    touch(tlb, 0, range(3))
    tlb.flush_tlb_mm_range(0, 1, va(0), va(1), VM_HUGETLB)
    assert [] == cached(tlb, 0)


def test_sender_not_running_the_mm_sends_a_full_flush(
        make: Callable[..., tuple[Any, DictTables]]) -> None:
    """A one-page range flushed from a CPU running another mm flushes all of the mm on the
    CPUs that run it: the default TLB_FLUSH_ALL is never narrowed."""
    tlb, _ = make()
    tlb.switch_mm(0, 1)
    tlb.switch_mm(2, 2)
    touch(tlb, 0, range(4))
    touch(tlb, 2, range(2))
    tlb.flush_tlb_mm_range(2, 1, va(0), va(1))
    assert [] == cached(tlb, 0)
    assert [0, 1] == cached(tlb, 2)  # the sender's own (other mm) entries are untouched
    assert 1 == tlb.view().cpus[0].irq_tlb_count


def test_remote_page_flush(make: Callable[..., tuple[Any, DictTables]]) -> None:
    """flush_tlb_page reaches the other CPU of the mask for that one page; the IPI is counted
    in its irq_tlb_count and as received."""
    tlb, _ = make()
    tlb.switch_mm(0, 1)
    tlb.switch_mm(1, 1)
    touch(tlb, 1, range(2))
    tlb.flush_tlb_page(0, 1, va(1))
    assert [0] == cached(tlb, 1)
    assert (1, 1) == (tlb.view().cpus[1].irq_tlb_count,
                      tlb.view().events.nr_tlb_remote_flush_received)


def test_flush_with_empty_range_still_flushes_page_zero_remotely(
        make: Callable[..., tuple[Any, DictTables]]) -> None:
    """flush_tlb_mm_range(mm, 0, 0): nothing locally, but native_flush_tlb_others turns
    end 0 into start + PAGE_SIZE, so the others flush page 0 (a 4.6 quirk)."""
    tlb, tables = make()
    tables.set_pte(1, 0, 0x9 << 12 | PAGE_SHARED)
    for cpu in (0, 1):
        tlb.switch_mm(cpu, 1)
        assert Outcome.FILL == tlb.access(cpu, 0).outcome
    tlb.flush_tlb_mm_range(0, 1, 0, 0)
    assert [0] == [e.vpage for e in tlb.view().cpus[0].entries]
    assert [] == [e.vpage for e in tlb.view().cpus[1].entries]


@pytest.mark.parametrize(("extra", "survives"), [(0, True), (1, False)])
def test_kernel_range_ceiling_in_bytes(make: Callable[..., tuple[Any, DictTables]],
                                       extra: int, survives: bool) -> None:
    """flush_tlb_kernel_range compares bytes with 33 pages: exactly 33 pages INVLPG each
    page (an entry outside survives on every CPU); one byte more flushes everything."""
    tlb, tables = make()
    for page in range(40):
        tables.set_pte(0, KERNEL_BASE + page * PAGE_SIZE, (0x40 + page) << 12 | PAGE_KERNEL)
    for cpu in range(3):
        assert Outcome.FILL == tlb.access(cpu, KERNEL_BASE + 35 * PAGE_SIZE).outcome
        assert Outcome.FILL == tlb.access(cpu, KERNEL_BASE).outcome
    tlb.flush_tlb_kernel_range(0, KERNEL_BASE, KERNEL_BASE + 33 * PAGE_SIZE + extra)
    for cpu in tlb.view().cpus:
        vpages = [e.vpage for e in cpu.entries]
        assert ([(KERNEL_BASE >> 12) + 35] if survives else []) == vpages


def test_flush_tlb_all_drops_globals_and_leaves_lazy_cpus(
        make: Callable[..., tuple[Any, DictTables]]) -> None:
    """Everything goes on every CPU, and a lazy CPU leaves its borrowed mm."""
    tlb, tables = make()
    tables.set_pte(0, KERNEL_BASE, 0x42 << 12 | PAGE_KERNEL)
    tlb.switch_mm(0, 1)
    tlb.switch_mm(1, 1)
    tlb.access(0, KERNEL_BASE)
    tlb.enter_lazy_tlb(1)
    tlb.flush_tlb_all(0)
    view = tlb.view()
    assert [(), (), ()] == [c.entries for c in view.cpus]
    assert ((1, (0,)),) == view.mm_cpumask
    assert (1, 3) == (view.events.nr_tlb_remote_flush, view.events.nr_tlb_remote_flush_received)


@pytest.mark.parametrize(("op", "args"), [
    ("switch_mm", {"cpu": 3, "mm": 1}), ("switch_mm", {"cpu": 0, "mm": 0}),
    ("enter_lazy_tlb", {"cpu": -1}), ("access", {"cpu": 0, "vaddr": -1}),
    ("flush_tlb_mm_range", {"cpu": 0, "mm": 1, "start": 0, "end": TLB_FLUSH_ALL + 1}),
    ("flush_tlb_page", {"cpu": 0, "mm": -2, "vaddr": 0}), ("flush_tlb_all", {"cpu": 3}),
    ("flush_tlb_kernel_range", {"cpu": 0, "start": -5, "end": 0}),
])
def test_bad_arguments_are_refused(make: Callable[..., tuple[Any, DictTables]], op: str,
                                   args: dict[str, int]) -> None:
    """-EINVAL and nothing changes."""
    tlb, tables = make()
    tlb.switch_mm(0, 1)
    touch(tlb, 0, range(2))
    before, table_before = tlb.view(), tables.view()
    assert EINVAL == getattr(tlb, op)(**args)
    assert before == tlb.view()
    assert table_before == tables.view()


def test_boots_without_tables() -> None:
    """A TLB booted without a table source walks nothing (the harness does this to read
    capabilities)."""
    for factory in (RefTlb, FastTlb):
        tlb = factory(THREE)
        tlb.switch_mm(0, 1)
        assert Outcome.PAGE_FAULT == tlb.access(0, va(0)).outcome


def test_exec_needs_nx_clear(make: Callable[..., tuple[Any, DictTables]]) -> None:
    """A fetch from a page without NX fills; with NX it faults with PF_INSTR."""
    tlb, tables = make()
    tables.set_pte(1, va(7), 0x70 << 12 | PAGE_SHARED_EXEC)
    tlb.switch_mm(0, 1)
    assert Outcome.FILL == tlb.access(0, va(7), exec=True).outcome
    assert PF_INSTR & tlb.access(0, va(8), exec=True).error_code
