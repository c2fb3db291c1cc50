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
