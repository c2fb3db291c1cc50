"""Every subsystem's machine as a pytest test: ``pytest --pyargs stateful_tests --vm-impl ...``.

Fixtures come from ``vmconform.pytest_plugin`` (loaded automatically once vmconform is
installed); the Hypothesis profile comes from ``--hypothesis-profile`` (default ``ci``).  A
subsystem the implementation does not provide is skipped, not failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings

from invariants.registry import LOCKSTEP, PLUGIN, checks_for
from specs.machine import MachineConfig
from stateful_tests.common import MachineSpec
from stateful_tests.profiles import run_machine
from stateful_tests.suites import available_suites

SUBSYSTEMS = list(available_suites())


@pytest.mark.parametrize("subsystem", SUBSYSTEMS)
def test_machine(subsystem: str, vm_impl: str, vm_mode: str, vm_config: MachineConfig,
                 vm_factories: dict[str, Callable[..., Any]]) -> None:
    """The implementation satisfies every applicable check of the subsystem on random step
    sequences (and, in lockstep mode, matches refmodel step for step)."""
    if subsystem not in vm_factories:
        pytest.skip(f"{vm_impl} does not implement {subsystem}")
    enabled = frozenset(c.id for c in checks_for(subsystem)) | {PLUGIN}
    if vm_mode == "lockstep":
        enabled |= {LOCKSTEP}
    suite = available_suites()[subsystem]
    machine = suite.make_machine(MachineSpec(
        factory=vm_factories[subsystem], impl_name=vm_impl, mode=vm_mode, config=vm_config,
        enabled=enabled, factories=vm_factories))
    run_machine(machine, settings())
