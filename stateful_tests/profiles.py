"""Hypothesis settings profiles: ``ci`` (short, derandomized), ``dev`` and ``fuzz``.

``ci`` is what the default test run and ``vmconform check`` use unless told otherwise; ``fuzz``
is for long campaigns and keeps every failure in an on-disk example database.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

DATABASE_DIR = os.environ.get("VMCONFORM_DB", ".vmconform/examples")

#: What every profile shares: no deadline (a step's cost depends on the plug-in), no health
#: checks (large machines are slow on purpose), one bug per run (the runner reruns for more).
_COMMON = settings(deadline=None, suppress_health_check=list(HealthCheck),
                   report_multiple_bugs=False, print_blob=True)

settings.register_profile("ci", _COMMON, max_examples=25, stateful_step_count=40,
                          derandomize=True, database=None)
settings.register_profile("dev", _COMMON, max_examples=150, stateful_step_count=60,
                          database=DirectoryBasedExampleDatabase(DATABASE_DIR))
settings.register_profile("fuzz", _COMMON, max_examples=1_000_000, stateful_step_count=100,
                          database=DirectoryBasedExampleDatabase(DATABASE_DIR),
                          phases=list(Phase))

PROFILES = ("ci", "dev", "fuzz")


def profile(name: str, **overrides: object) -> settings:
    """A registered profile, with overrides (e.g. max_examples from the command line)."""
    return settings(settings.get_profile(name), **overrides)  # type: ignore[arg-type]


def run_machine(machine: type[RuleBasedStateMachine], run_settings: settings) -> None:
    """run_state_machine_as_test with a typed signature."""
    run_state_machine_as_test(machine, settings=run_settings)  # type: ignore[no-untyped-call, unused-ignore]
