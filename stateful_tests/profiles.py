"""Hypothesis settings profiles: ``ci`` (short, derandomized), ``dev`` and ``fuzz``.

``ci`` is what the default test run and ``vmconform check`` use unless told otherwise; ``fuzz``
is for long campaigns and keeps every failure in an on-disk example database.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

DATABASE_DIR = os.environ.get("VMCONFORM_DB", ".vmconform/examples")

_COMMON = {
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "report_multiple_bugs": False,
    "print_blob": True,
}

settings.register_profile("ci", max_examples=25, stateful_step_count=40, derandomize=True,
                          database=None, **_COMMON)
settings.register_profile("dev", max_examples=150, stateful_step_count=60,
                          database=DirectoryBasedExampleDatabase(DATABASE_DIR), **_COMMON)
settings.register_profile("fuzz", max_examples=1_000_000, stateful_step_count=100,
                          database=DirectoryBasedExampleDatabase(DATABASE_DIR),
                          phases=list(Phase), **_COMMON)

PROFILES = ("ci", "dev", "fuzz")


def profile(name: str, **overrides: object) -> settings:
    """A registered profile, with overrides (e.g. max_examples from the command line)."""
    return settings(settings.get_profile(name), **overrides)  # type: ignore[arg-type]
