"""Litmus tests for TLB coherence: short fixed programs over 2-3 CPUs, with the final states
that are allowed and the ones that are forbidden, as relaxed-memory work writes them.

A test names an initial state (table entries, which mm each CPU runs), a program (one fixed
interleaving of per-CPU steps: table writes, flushes, context switches, and accesses whose
outcome lands in a register ``r0, r1, ...``) and a final condition over the registers and the
TLBs.  ``allowed`` lists the outcomes a correct TLB may give (4.6's, and others a correct
implementation with another policy might give); ``forbidden`` the ones no correct TLB may
give.  Each test runs on refmodel and fastmodel (the outcome must be allowed and not
forbidden), and on a mutant from ``tests/mutants/tlb.py`` that must land on a forbidden
outcome: a forbidden state that nothing can reach would prove nothing.

Register values: ``HIT:<pfn>``, ``FILL:<pfn>``, ``FAULT``.  Final-state facts:
``cpu<N>:<page>`` for "cpu N caches that page" (page numbers are offsets from the user base;
``K<n>`` for kernel pages).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from fastmodel.tlb import FastTlb
from refmodel.tlb import DictTables, RefTlb
from specs.machine import MachineConfig
from specs.pte import _PAGE_RW, PAGE_SIZE
from specs.tlb import TLB_FLUSH_ALL, Access, Outcome
from stateful_tests.tlb_machine import KERNEL_BASE, PAGE_KERNEL, PAGE_SHARED, USER_BASE
from tests.mutants import tlb as mutants

THREE = MachineConfig(name="three", nr_pages=4096, nr_cpus=3)

#: A step: (cpu, operation, arguments).  Operations: the Tlb methods, plus "set" (a table
#: write by that CPU: mm, page, pfn or 0, flags) and "read"/"write" (an access whose outcome
#: goes to the next register).
Step = tuple[int, str, dict[str, Any]]


def va(page: int | str) -> int:
    """User page n, or kernel page "K<n>"."""
    if isinstance(page, str):
        return KERNEL_BASE + int(page[1:]) * PAGE_SIZE
    return USER_BASE + page * PAGE_SIZE


@attrs.frozen
class Litmus:
    """One litmus test."""

    name: str
    #: (mm, page, pfn, flags) entries mapped before the program (mm 0: kernel pages)
    init_tables: tuple[tuple[int, int | str, int, int], ...]
    #: the mm each CPU runs at the start (0: stays an idle kernel thread)
    init_mms: tuple[int, ...]
    program: tuple[Step, ...]
    #: every fact an outcome is judged on (registers and cpu<N>:<page> facts)
    observe: tuple[str, ...]
    allowed: tuple[frozenset[str], ...]
    forbidden: tuple[frozenset[str], ...]
    #: a mutant that reaches a forbidden outcome
    witness: type


def outcome(test: Litmus, factory: Callable[..., Any]) -> frozenset[str]:
    """Run the program; the observed facts (registers and cached pages) it ends with."""
    tables = DictTables()
    for mm, page, pfn, flags in test.init_tables:
        tables.set_pte(mm, va(page), pfn << 12 | flags)
    tlb = factory(THREE, tables)
    for cpu, mm in enumerate(test.init_mms):
        if mm:
            assert 0 == tlb.switch_mm(cpu, mm)
    registers: list[str] = []
    for cpu, op, args in test.program:
        if op == "set":
            tables.set_pte(args["mm"], va(args["page"]), args["pfn"] << 12 | args["flags"]
                           if args["pfn"] else 0)
        elif op in ("read", "write"):
            result = tlb.access(cpu, va(args["page"]), write=op == "write")
            assert isinstance(result, Access)
            registers.append("FAULT" if result.outcome is Outcome.PAGE_FAULT else
                             f"{result.outcome.name}:{result.pfn:#x}")
        else:
            fixed = {k: va(v) if k in ("vaddr", "start", "end") and v != TLB_FLUSH_ALL else v
                     for k, v in args.items()}
            assert 0 == getattr(tlb, op)(cpu, **fixed)
    facts = {f"r{i}={value}" for i, value in enumerate(registers)}
    for cpu in tlb.view().cpus:
        for entry in cpu.entries:
            kernel = entry.vpage >= KERNEL_BASE >> 12
            page = f"K{entry.vpage - (KERNEL_BASE >> 12)}" if kernel else \
                str(entry.vpage - (USER_BASE >> 12))
            facts.add(f"cpu{cpu.cpu}:{page}")
    return frozenset(f for f in facts if f in test.observe)


def cond(*facts: str) -> frozenset[str]:
    """An outcome: exactly these observed facts hold (the others observed do not)."""
    return frozenset(facts)


RW = PAGE_SHARED
RO = PAGE_SHARED & ~_PAGE_RW

TESTS = (
    Litmus(
        name="unmap-flush",
        # cpu0 and cpu1 run threads of mm 1 and both cache page 0; cpu0 unmaps it and
        # flushes.  Between the clear and the flush cpu1 may still use the old translation;
        # after flush_tlb_page has returned it must not.
        init_tables=((1, 0, 0x50, RW),), init_mms=(1, 1, 0),
        program=((0, "read", {"page": 0}), (1, "read", {"page": 0}),
                 (0, "set", {"mm": 1, "page": 0, "pfn": 0, "flags": 0}),
                 (1, "read", {"page": 0}),
                 (0, "flush_tlb_page", {"mm": 1, "vaddr": 0}),
                 (1, "read", {"page": 0})),
        observe=("r2=HIT:0x50", "r2=FAULT", "r3=HIT:0x50", "r3=FAULT", "cpu1:0"),
        allowed=(cond("r2=HIT:0x50", "r3=FAULT"), cond("r2=FAULT", "r3=FAULT")),
        forbidden=(cond("r2=HIT:0x50", "r3=HIT:0x50", "cpu1:0"),),
        witness=mutants.FlushForgetsRemoteCpus),
    Litmus(
        name="lazy-leave",
        # cpu1 caches page 0 of mm 1 and switches to a kernel thread (lazy: mm 1 stays
        # loaded).  cpu0 unmaps and flushes; the IPI makes cpu1 leave mm 1.  The kernel
        # thread's speculative read, and the task's read once it is back, must both fault.
        init_tables=((1, 0, 0x50, RW),), init_mms=(1, 1, 0),
        program=((1, "read", {"page": 0}), (1, "enter_lazy_tlb", {}),
                 (0, "set", {"mm": 1, "page": 0, "pfn": 0, "flags": 0}),
                 (0, "flush_tlb_page", {"mm": 1, "vaddr": 0}),
                 (1, "read", {"page": 0}), (1, "switch_mm", {"mm": 1}),
                 (1, "read", {"page": 0})),
        observe=("r1=HIT:0x50", "r1=FAULT", "r2=HIT:0x50", "r2=FAULT"),
        allowed=(cond("r1=FAULT", "r2=FAULT"),),
        forbidden=(cond("r1=HIT:0x50", "r2=HIT:0x50"), cond("r1=FAULT", "r2=HIT:0x50"),
                   cond("r1=HIT:0x50", "r2=FAULT")),
        witness=mutants.LazyLeaveKeepsStaleEntries),
    Litmus(
        name="upgrade-without-flush",
        # cpu1 caches a read-only entry; cpu0's fault path makes the PTE writable without a
        # flush.  cpu1's first store may fault spuriously (the stale entry grants less);
        # the fault drops the entry, so the retry must succeed.
        init_tables=((1, 0, 0x50, RO),), init_mms=(1, 1, 0),
        program=((1, "read", {"page": 0}),
                 (0, "set", {"mm": 1, "page": 0, "pfn": 0x50, "flags": RW}),
                 (1, "write", {"page": 0}), (1, "write", {"page": 0})),
        observe=("r1=FAULT", "r1=FILL:0x50", "r2=FILL:0x50", "r2=HIT:0x50", "r2=FAULT"),
        allowed=(cond("r1=FAULT", "r2=FILL:0x50"), cond("r1=FILL:0x50", "r2=HIT:0x50")),
        forbidden=(cond("r1=FAULT", "r2=FAULT"),),
        witness=mutants.SpuriousFaultKeepsEntry),
    Litmus(
        name="ceiling-33",
        # Two threads of mm 1 on cpu0 and cpu1 cache pages 0..35; cpu0 unmaps 0..32 (33
        # pages) and flushes the range.  4.6 INVLPGs 33 pages here and remotely, so page 35
        # stays cached on both; an implementation that reloads CR3 at 33 loses it.
        init_tables=tuple((1, p, 0x50 + p, RW) for p in range(36)), init_mms=(1, 1, 0),
        program=(*((cpu, "read", {"page": p}) for cpu in (0, 1) for p in range(36)),
                 *((0, "set", {"mm": 1, "page": p, "pfn": 0, "flags": 0}) for p in range(33)),
                 (0, "flush_tlb_mm_range", {"mm": 1, "start": 0, "end": 33})),
        observe=("cpu0:35", "cpu1:35", "cpu0:32", "cpu1:32"),
        allowed=(cond("cpu0:35", "cpu1:35"), cond()),  # the second: another policy
        forbidden=(cond("cpu0:32"), cond("cpu1:32"), cond("cpu0:32", "cpu1:32", "cpu0:35",
                                                            "cpu1:35")),
        witness=mutants.RangeFlushMissesLastPage),
    Litmus(
        name="global-survives-switch",
        # cpu0 caches a kernel page (global) and a user page of mm 1, then switches to mm 2,
        # which maps the same user page elsewhere.  The kernel entry must survive; the user
        # access must reach mm 2's page, never mm 1's.
        init_tables=((0, "K0", 0x40, PAGE_KERNEL), (1, 0, 0x50, RW), (2, 0, 0x60, RW)),
        init_mms=(1, 0, 0),
        program=((0, "read", {"page": "K0"}), (0, "read", {"page": 0}),
                 (0, "switch_mm", {"mm": 2}), (0, "read", {"page": "K0"}),
                 (0, "read", {"page": 0})),
        observe=("r2=HIT:0x40", "r2=FILL:0x40", "r3=FILL:0x60", "r3=HIT:0x50"),
        allowed=(cond("r2=HIT:0x40", "r3=FILL:0x60"),),
        forbidden=(cond("r2=HIT:0x40", "r3=HIT:0x50"), cond("r2=FILL:0x40", "r3=FILL:0x60")),
        witness=mutants.Cr3LoadKeepsNonGlobal),
    Litmus(
        name="vunmap-three-cpus",
        # All three CPUs cache a kernel page; cpu2 vunmaps it and flushes the kernel range.
        # No CPU may use it afterwards, whatever mm it runs.
        init_tables=((0, "K3", 0x43, PAGE_KERNEL),), init_mms=(1, 2, 1),
        program=((0, "read", {"page": "K3"}), (1, "read", {"page": "K3"}),
                 (2, "read", {"page": "K3"}),
                 (2, "set", {"mm": 0, "page": "K3", "pfn": 0, "flags": 0}),
                 (2, "flush_tlb_kernel_range", {"start": "K3", "end": "K4"}),
                 (0, "read", {"page": "K3"}), (1, "read", {"page": "K3"})),
        observe=("r3=FAULT", "r4=FAULT", "r3=HIT:0x43", "r4=HIT:0x43"),
        allowed=(cond("r3=FAULT", "r4=FAULT"),),
        forbidden=(cond("r3=HIT:0x43", "r4=FAULT"), cond("r3=FAULT", "r4=HIT:0x43"),
                   cond("r3=HIT:0x43", "r4=HIT:0x43")),
        witness=mutants.KernelRangeSkipsRemoteCpus),
)


@pytest.mark.parametrize("factory", [RefTlb, FastTlb], ids=["refmodel", "fastmodel"])
@pytest.mark.parametrize("test", TESTS, ids=lambda t: t.name)
def test_outcome_is_allowed(test: Litmus, factory: Callable[..., Any]) -> None:
    """A correct TLB ends in an allowed outcome and in no forbidden one."""
    got = outcome(test, factory)
    assert got in test.allowed
    assert got not in test.forbidden


@pytest.mark.parametrize("test", TESTS, ids=lambda t: t.name)
def test_forbidden_outcome_is_reachable(test: Litmus) -> None:
    """The witness mutant ends in a forbidden outcome: the condition can fail."""
    assert outcome(test, test.witness) in test.forbidden


def test_outcome_sets_are_disjoint() -> None:
    """No outcome is both allowed and forbidden."""
    assert [] == [t.name for t in TESTS if set(t.allowed) & set(t.forbidden)]
