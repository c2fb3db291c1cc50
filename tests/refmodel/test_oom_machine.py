"""The OOM machine: lockstep catches a broken policy with no spec check enabled, the rule
bodies run without Hypothesis (as a replay drives them), and a kernel without the OOM
killer still runs the machine.

That refmodel passes every OOM check and that each OOM mutant is caught by its target alone
is tests/test_mutants.py's business, as for every subsystem.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from invariants.registry import LOCKSTEP, PLUGIN, CheckFailure, checks_for
from refmodel.kernel import RefKernel
from specs.kernel import Capability
from specs.machine import preset
from stateful_tests import profiles
from stateful_tests.common import MachineSpec
from stateful_tests.oom_machine import OomMachineBase, make_oom_machine
from tests.mutants import oom as oom_mutants

ALL_IDS = frozenset(check.id for check in checks_for("oom"))


def machine(factory: Any, mode: str, enabled: frozenset[str]) -> type[OomMachineBase]:
    """The OOM machine for one kernel factory on the tiny preset."""
    return make_oom_machine(MachineSpec(factory=factory, impl_name="kernel", mode=mode,
                                        config=preset("tiny"), enabled=enabled | {PLUGIN}))


def run(cls: type[OomMachineBase], examples: int) -> None:
    """Run without shrinking: which check fires is the question."""
    run_state_machine_as_test(cls, settings=settings(  # type: ignore[no-untyped-call, unused-ignore]
        profiles.profile("ci"), max_examples=examples, phases=[Phase.generate]))


def test_lockstep_catches_a_broken_policy_without_spec_checks() -> None:
    """A policy that kills again while a victim is dying diverges from refmodel."""
    with pytest.raises(CheckFailure) as caught:
        run(machine(oom_mutants.KillsWhileOneDies, "lockstep", frozenset({LOCKSTEP})), 60)
    assert LOCKSTEP == caught.value.check_id


def test_rule_bodies_run_without_hypothesis() -> None:
    """A replay calls do_<rule> directly: memory runs out, a victim dies, is reaped and
    exits, every check judging each step."""
    state = machine(RefKernel, "contract", ALL_IDS)()
    assert [1, 2] == state.pids()  # init and its privileged child
    state.do_hog(index=0, pages=2560, fork_after=False)
    state.do_hog(index=0, pages=2560, fork_after=False)
    state.invariants_hold()
    view = state.kernel.view()
    assert view.oom is not None
    assert [2] == [p.pid for p in view.processes if p.oom.sigkill]
    state.do_write(index=1, cpu=0, mapping=0, page=0, offset=0, n=4)  # refused: dying
    state.do_exit_victim(reap_first=True)
    state.invariants_hold()
    assert [1] == state.pids()
    assert [] != [s for s in state.trace.steps if s["rule"] == "exit_victim"]
    state.teardown()


def test_kernel_without_oom_runs_with_every_check_skipped() -> None:
    """``RefKernel(oom=False)`` lacks Capability.OOM: the OOM rules drop out, the machine
    still drives faults and memory pressure, lockstep against refmodel without the killer."""
    factory = functools.partial(RefKernel, oom=False)
    cls = machine(factory, "lockstep", ALL_IDS | {LOCKSTEP})
    state = cls()
    assert Capability.OOM not in state.caps
    assert [] == state.state_checks
    run(cls, 5)
