"""The address-space state machine on the reference model, and what its failures look like.

``tests/test_mutants.py`` covers refmodel-passes-everything only for subsystems whose fast
model is in place too; this file runs the vma machine on refmodel regardless, in both modes.
"""

from __future__ import annotations

import pytest

from invariants.registry import LOCKSTEP, PLUGIN, CheckFailure, checks_for
from refmodel.vma import RefAddressSpace
from specs.machine import preset
from stateful_tests.common import MachineSpec
from stateful_tests.profiles import profile, run_machine
from stateful_tests.vma_machine import make_vma_machine
from tests.mutants.vma import MunmapOfAHoleFails


def spec(factory: object, mode: str, enabled: frozenset[str] | None = None) -> MachineSpec:
    ids = frozenset(c.id for c in checks_for("vma")) | {PLUGIN}
    if mode == "lockstep":
        ids |= {LOCKSTEP}
    return MachineSpec(factory=factory, impl_name="refmodel", mode=mode,  # type: ignore[arg-type]
                       config=preset("tiny"), enabled=enabled if enabled is not None else ids)


@pytest.mark.parametrize("mode", ["lockstep", "contract"])
def test_refmodel_passes_every_vma_check(mode: str) -> None:
    """Random syscall sequences, bad input included, never trip a check on refmodel."""
    run_machine(make_vma_machine(spec(RefAddressSpace, mode)), profile("ci", max_examples=30))


def test_failure_shows_the_maps_and_a_diagram() -> None:
    """A failure message has the /proc/self/maps-style listing and the page diagram."""
    machine = make_vma_machine(spec(MunmapOfAHoleFails, "contract",
                                    frozenset({"VMA-R3", PLUGIN})))()
    machine.do_mmap_anon(0, 2, 3, False, True, 0)
    with pytest.raises(CheckFailure) as caught:
        machine.do_munmap(3, 2)
    message = caught.value.message
    assert "VMA-R3" == caught.value.check_id
    assert "rw-p" in message
    assert "[rd wr mr mw me ac sd]" in message
    assert "pages from" in message
    assert "AA" in message


class ForkReturnsNone(RefAddressSpace):
    """dup_mm returns None: neither a child nor an errno."""

    def dup_mm(self) -> RefAddressSpace | int:
        return None  # type: ignore[return-value]


class ForkAlwaysRefused(RefAddressSpace):
    """dup_mm answers -ENOMEM whatever the overcommit mode."""

    def dup_mm(self) -> RefAddressSpace | int:
        return -12


def test_fork_goes_on_in_the_child_in_lockstep() -> None:
    """After a fork the machine drives the child: the copy of a split written VMA refuses
    the merge its inherited anon_vma chain forbids, on both sides alike."""
    machine = make_vma_machine(spec(RefAddressSpace, "lockstep"))()
    machine.do_merge_case(0, (1, 2, 1), 1, 1)
    parent = machine.sut.impl
    machine.do_fork(True, -1, 5)
    assert machine.sut.impl is not parent
    assert machine.ref is not None
    assert machine.ref is not parent
    assert machine.view == machine.sut.impl.view()
    assert not any(v.flags & 0x2000 for v in machine.view.vmas), "VM_LOCKED reached the child"
    machine.do_map_beside(0, 1, 3, True, -1, 0)
    machine.do_mprotect(1, 2, 3)
    machine.invariants_hold()


def test_fork_refused_under_strict_overcommit_changes_nothing() -> None:
    """OVERCOMMIT_NEVER with ratio 0 refuses the VM_ACCOUNT copies: -ENOMEM, the run goes
    on in the unchanged parent (VMA-R10 demands the refusal)."""
    machine = make_vma_machine(spec(RefAddressSpace, "contract"))()
    parent = machine.sut.impl
    before = machine.view
    machine.do_fork(True, 0, -1)
    assert machine.sut.impl is parent
    assert machine.view == before


def test_fork_refused_without_cause_is_caught() -> None:
    """-ENOMEM under OVERCOMMIT_GUESS for a small address space is a VMA-R10 failure."""
    machine = make_vma_machine(spec(ForkAlwaysRefused, "contract",
                                    frozenset({"VMA-R10", PLUGIN})))()
    with pytest.raises(CheckFailure) as caught:
        machine.do_fork(False, -1, -1)
    assert "VMA-R10" == caught.value.check_id
    assert "nothing 4.6 could refuse" in caught.value.message or "grants every" in \
        caught.value.message


def test_a_child_that_is_not_an_address_space_is_a_plugin_failure() -> None:
    machine = make_vma_machine(spec(ForkReturnsNone, "contract"))()
    with pytest.raises(CheckFailure) as caught:
        machine.do_fork(True, -1, -1)
    assert PLUGIN == caught.value.check_id
    assert "dup_mm" in caught.value.message
