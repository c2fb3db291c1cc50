"""The composed-kernel machine: lockstep catches a mutant with no spec check enabled, the rule
bodies run without Hypothesis (as a replay drives them), and regressions the machine found.

That refmodel passes every FAULT check and that each FAULT mutant is caught by its target
alone is tests/test_mutants.py's business, as for every subsystem.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from invariants.fault_rules import (
    Expect,
    FaultStep,
    access_signals,
    expect_access,
    no_leak_on_failure,
    taken_pfns,
)
from invariants.registry import LOCKSTEP, PLUGIN, CheckFailure, checks_for
from refmodel.kernel import RefKernel
from specs import pte as pt
from specs.kernel import (
    SEGV_ACCERR,
    SEGV_MAPERR,
    SI_KERNEL,
    SIGSEGV,
    VM_FAULT_OOM,
    FaultResult,
)
from specs.machine import preset
from specs.vma import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    VM_GROWSDOWN,
)
from stateful_tests import profiles
from stateful_tests.common import MachineSpec
from stateful_tests.fault_machine import (
    ACCESS_OPS,
    BAD_PLACES,
    FaultMachineBase,
    make_fault_machine,
)
from tests.mutants import fault as fault_mutants

ALL_IDS = frozenset(check.id for check in checks_for("fault"))
PAGE = pt.PAGE_SIZE


def machine(factory: Any, mode: str, enabled: frozenset[str]) -> type[FaultMachineBase]:
    """The fault machine for one kernel factory on the tiny preset."""
    return make_fault_machine(MachineSpec(factory=factory, impl_name=factory.__name__,
                                          mode=mode, config=preset("tiny"),
                                          enabled=enabled | {PLUGIN}))


def run(cls: type[FaultMachineBase], examples: int) -> None:
    """Run without shrinking: which check fires is the question."""
    run_state_machine_as_test(cls, settings=settings(  # type: ignore[no-untyped-call, unused-ignore]
        profiles.profile("ci"), max_examples=examples,
        phases=[Phase.generate]))


def test_lockstep_catches_a_mutant_without_spec_checks() -> None:
    """A fork that leaves the parent writable diverges from refmodel."""
    with pytest.raises(CheckFailure) as caught:
        run(machine(fault_mutants.ForkLeavesParentWritable, "lockstep", frozenset({LOCKSTEP})),
            60)
    assert LOCKSTEP == caught.value.check_id


def test_rule_bodies_run_without_hypothesis() -> None:
    """A replay calls do_<rule> directly: the COW scenario, an exit and the teardown check."""
    cls = machine(RefKernel, "contract", ALL_IDS)
    state = cls()
    state.do_cow_scenario(index=0, cpu=0, mapping=0, page=1, offset=3, child_writes=True)
    state.invariants_hold()
    assert 2 == len(state.pids())
    assert [] != [step for step in state.trace.steps if step["rule"] == "cow_scenario"]
    private = state.ledger.private
    assert private[1] != private[2]  # both wrote the same address after the fork
    state.do_exit(index=1)
    state.invariants_hold()
    state.teardown()
    assert [] == state.pids()


def test_mprotect_back_to_writable_restores_a_merged_piece() -> None:
    """A page made PROT_NONE and then writable again, where the mprotect merges it into an
    unchanged neighbour, gets the neighbour's protection back (refmodel once skipped it and
    the next store faulted forever)."""
    k = RefKernel(preset("tiny"))
    pid = k.spawn()
    k.switch(0, pid)
    base = k.mmap(pid, 0, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert 0 == k.copy_to_user(0, base + 4096, b"K")
    assert 0 == k.mprotect(pid, base + 4096, 4096, PROT_NONE)
    assert 0 == k.mprotect(pid, base, 2 * 4096, PROT_READ | PROT_WRITE)
    assert 1 == len([v for v in k.space(pid).view().vmas if v.start <= base < v.end])
    assert 1 == k.write(0, base + 4096, b"L")
    assert b"L" == k.read(0, base + 4096, 1)


# -- the step rules on hand-made steps ----------------------------------------------------------


def test_taken_pfns_are_free_before_and_not_after() -> None:
    """Spans in, pfns out: only what left the free lists and did not come back."""
    assert [3, 4, 9] == taken_pfns([(2, 6), (8, 10)], [(2, 3), (5, 6), (8, 9)])
    assert [] == taken_pfns([(2, 6)], [(0, 10)])
    assert [0, 1] == taken_pfns([(0, 2)], [])


def contract_machine(*ids: str) -> FaultMachineBase:
    """A booted contract-mode machine on refmodel with the given checks enabled."""
    return machine(RefKernel, "contract", frozenset(ids))()


def test_expected_signals_from_the_address_space() -> None:
    """FAULT-R5's table, on the first process right after boot."""
    state = contract_machine("FAULT-R5")
    snap, pid = state.snapshot(), state.pids()[0]
    anon, _shared, _file = state.maps[pid]
    stack = next(v for v in snap.spaces[pid].vmas if v.flags & VM_GROWSDOWN)
    cases = {
        0xFFFF_8800_0000_0000: Expect(SIGSEGV, SEGV_MAPERR, 0xFFFF_8800_0000_0000),
        1 << 47: Expect(SIGSEGV, SI_KERNEL, 0),
        pt.TASK_SIZE_MAX: Expect(SIGSEGV, SEGV_MAPERR, pt.TASK_SIZE_MAX),
        0: Expect(SIGSEGV, SEGV_MAPERR, 0),
        anon[0]: Expect(0),
        stack.start - PAGE: Expect(SIGSEGV, SEGV_MAPERR, stack.start - PAGE, maybe=True),
        stack.start: Expect(SIGSEGV, SEGV_MAPERR, stack.start, maybe=True),
        stack.start + PAGE: Expect(0),
    }
    got = {addr: expect_access(snap, pid, addr, write=True) for addr in cases}
    assert cases == got
    assert 0 == state.step("mprotect", pid=pid, addr=anon[0], length=PAGE, prot=PROT_READ)
    assert Expect(SIGSEGV, SEGV_ACCERR, anon[0]) == \
        expect_access(state.snapshot(), pid, anon[0], write=True)


def test_r5_flags_a_wrong_si_code_and_a_copy_past_a_hole() -> None:
    """The rule itself fails on wrong results (the mutants show it on whole runs)."""
    state = contract_machine("FAULT-R5")
    snap, pid = state.snapshot(), state.pids()[0]
    wrong = FaultResult(signal=SIGSEGV, si_code=SEGV_ACCERR, addr=0)
    step = FaultStep(op="read", args={"cpu": 0, "addr": 0, "n": 1}, result=wrong,
                     before=snap, after=snap)
    assert [] != access_signals(step)
    assert [] != access_signals(attrs.evolve(step, op="write"))
    low = min(addr for addr, _length in state.maps[pid])  # nothing is mapped right below it
    step = FaultStep(op="copy_from_user", args={"cpu": 0, "addr": low - 4, "n": 8},
                     result=(0, bytes(8)), before=snap, after=snap)
    assert [] != access_signals(step)
    step = FaultStep(op="copy_from_user", args={"cpu": 0, "addr": low - 4, "n": 8},
                     result=(8, bytes(8)), before=snap, after=snap)
    assert [] == access_signals(step)


def test_r4_flags_a_page_nothing_holds() -> None:
    """A page taken during a step that no live mm or page cache holds is a leak."""
    state = contract_machine("FAULT-R4")
    before = state.snapshot()
    pfn = state.kernel.pages.alloc_pages(0, 0)
    after = state.snapshot()
    step = FaultStep(op="write", args={"cpu": 0, "addr": 0, "data": b"x"}, result=1,
                     before=before, after=after)
    problems = list(no_leak_on_failure(step))
    assert [f"{pfn:#x}"] == [p for p in problems[0].split("'") if "0x" in p]


# -- the rules that drive them ------------------------------------------------------------------


def test_failure_sweeps_fail_forks_and_stores_until_they_succeed() -> None:
    """failing_fork and failing_store fail at each allocation in turn, judged by FAULT-R4
    (and every other check) step by step, and end with the operation done."""
    state = contract_machine(*ALL_IDS)
    forks = []
    real = state.step

    def spy(op: str, **args: Any) -> Any:
        result = real(op, **args)
        if op in ("fork", "write"):
            forks.append((op, result))
        return result

    state.step = spy  # type: ignore[method-assign]
    state.do_failing_fork(index=0, space=0)
    state.do_failing_store(index=0, cpu=0, mapping=0, page=1, fresh_file=True)
    state.invariants_hold()
    fork_results = [r for op, r in forks if op == "fork"]
    assert -12 == fork_results[0]
    assert fork_results[-1] > 0
    store_results = [r for op, r in forks if op == "write"]
    assert isinstance(store_results[0], FaultResult)
    assert 2 == store_results[-1]
    assert store_results[0].vm_fault & VM_FAULT_OOM
    state.teardown()


def test_brk_and_mremap_carry_the_ledger() -> None:
    """Bytes stored in the heap and in a mapping that mremap moves are found again where the
    mapping went (FAULT-I1 reads them back after every step)."""
    state = contract_machine(*ALL_IDS)
    pid = state.pids()[0]
    state.do_brk(index=0, pages=3, offset=0)
    heap = state.kernel.space(pid).view().start_brk
    assert (heap, 3 * PAGE) in state.maps[pid]
    state._write(0, heap + PAGE + 5, b"heap")
    state.do_brk(index=0, pages=-2, offset=0)
    assert heap + PAGE + 5 not in state.ledger.private[pid]
    anon = state.maps[pid][0]
    state._write(0, anon[0] + 7, b"moved")
    state.do_mremap(index=0, mapping=0, pages=40, how=2, dest=3)  # FIXED, 64 pages up
    new = state.maps[pid][0]
    assert (anon[0] + 64 * PAGE, 40 * PAGE) == new
    assert ord("m") == state.ledger.private[pid][new[0] + 7]
    assert anon[0] + 7 not in state.ledger.private[pid]
    state.invariants_hold()
    assert b"moved" == state.step("read", cpu=0, addr=new[0] + 7, n=5)
    state.teardown()


def test_bad_accesses_run_for_every_place_and_operation() -> None:
    """Every bad place and every access kind, judged by FAULT-R5 and the rest."""
    state = contract_machine(*ALL_IDS)
    for place in BAD_PLACES:
        for op in ACCESS_OPS:
            state.do_bad_access(index=0, cpu=0, place=place, mapping=0, page=0, op=op, n=8)
    state.invariants_hold()
    kinds = {step["args"]["place"] for step in state.trace.steps if step["rule"] == "bad_access"}
    assert set(BAD_PLACES) == kinds
    state.teardown()
