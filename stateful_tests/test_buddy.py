"""The buddy machine as a pytest test, for ``pytest --pyargs stateful_tests --vm-impl ...``.

Fixtures come from ``vmconform.pytest_plugin`` (loaded automatically once vmconform is
installed); the Hypothesis profile comes from ``--hypothesis-profile`` (default ``ci``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import settings

from invariants.registry import LOCKSTEP, PLUGIN, checks_for
from specs.machine import MachineConfig
from stateful_tests.buddy_machine import MachineSpec, make_buddy_machine
from stateful_tests.profiles import run_machine


def test_buddy(vm_impl: str, vm_mode: str, vm_config: MachineConfig,
               vm_factories: dict[str, Callable[[MachineConfig], Any]]) -> None:
    """The implementation satisfies every applicable buddy check on random step sequences."""
    enabled = frozenset(c.id for c in checks_for("buddy")) | {PLUGIN}
    if vm_mode == "lockstep":
        enabled |= {LOCKSTEP}
    machine = make_buddy_machine(MachineSpec(factory=vm_factories["buddy"], impl_name=vm_impl,
                                             mode=vm_mode, config=vm_config, enabled=enabled))
    run_machine(machine, settings())
