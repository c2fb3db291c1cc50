"""pytest plugin: run the state machines on any implementation from a pytest command line.

``pytest --pyargs stateful_tests --vm-impl mypkg.alloc:MyBuddy --vm-mode contract`` runs the
product's machines against a user's allocator; ``--hypothesis-profile fuzz`` (registered by
``stateful_tests.profiles``) turns the same run into a long campaign.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import stateful_tests.profiles  # noqa: F401  (registers the ci/dev/fuzz profiles)
from specs.machine import PRESETS, MachineConfig, preset
from vmconform import registry


def pytest_addoption(parser: pytest.Parser) -> None:
    """--vm-impl, --vm-mode, --vm-preset."""
    group = parser.getgroup("vmconform")
    group.addoption("--vm-impl", default="fastmodel",
                    help="implementation under test: refmodel, fastmodel, an entry-point name "
                         "or module:factory (default fastmodel)")
    group.addoption("--vm-mode", default="lockstep", choices=["lockstep", "contract"],
                    help="lockstep (compare with refmodel) or contract (invariants only)")
    group.addoption("--vm-preset", default="tiny", choices=sorted(PRESETS),
                    help="machine preset (default tiny)")


@pytest.fixture
def vm_impl(request: pytest.FixtureRequest) -> str:
    """The implementation name given on the command line."""
    return str(request.config.getoption("--vm-impl"))


@pytest.fixture
def vm_mode(request: pytest.FixtureRequest) -> str:
    """lockstep or contract."""
    return str(request.config.getoption("--vm-mode"))


@pytest.fixture
def vm_config(request: pytest.FixtureRequest) -> MachineConfig:
    """The machine preset to boot."""
    return preset(str(request.config.getoption("--vm-preset")))


@pytest.fixture
def vm_factories(vm_impl: str) -> dict[str, Callable[[MachineConfig], Any]]:
    """subsystem -> factory for the implementation under test."""
    return dict(registry.resolve(vm_impl).factories)
