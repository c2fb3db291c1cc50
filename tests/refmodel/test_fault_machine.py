"""The composed-kernel machine: lockstep catches a mutant with no spec check enabled, the rule
bodies run without Hypothesis (as a replay drives them), and regressions the machine found.

That refmodel passes every FAULT check and that each FAULT mutant is caught by its target
alone is tests/test_mutants.py's business, as for every subsystem.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from invariants.registry import LOCKSTEP, PLUGIN, CheckFailure, checks_for
from refmodel.kernel import RefKernel
from specs.machine import preset
from specs.vma import MAP_ANONYMOUS, MAP_PRIVATE, PROT_NONE, PROT_READ, PROT_WRITE
from stateful_tests import profiles
from stateful_tests.common import MachineSpec
from stateful_tests.fault_machine import FaultMachineBase, make_fault_machine
from tests.mutants import fault as fault_mutants

ALL_IDS = frozenset(check.id for check in checks_for("fault"))


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
