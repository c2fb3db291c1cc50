"""Invariant checkers over read-only views, so they run on any implementation.

Each checker is registered under the stable ID its spec defines (``specs/<subsystem>.md``)
and returns the list of problems it found (empty when the property holds).  Checkers import
only the contract layer (``specs``) and numpy; they never see an implementation's internals.
"""

from invariants.registry import (
    REGISTRY,
    Check,
    CheckFailure,
    checks_for,
    state_invariant,
    step_rule,
)

__all__ = ["REGISTRY", "Check", "CheckFailure", "checks_for", "state_invariant", "step_rule"]
