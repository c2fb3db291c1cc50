"""Re-run a recorded trace step by step, with every check, and without Hypothesis."""

from __future__ import annotations

from typing import Any

from invariants.registry import CheckFailure
from stateful_tests.common import ConformanceMachine
from stateful_tests.trace import REF


def _decode(machine: ConformanceMachine, value: Any) -> Any:
    if isinstance(value, dict) and REF in value:
        return machine.handles[value[REF]]
    if isinstance(value, list):
        return [_decode(machine, v) for v in value]
    return value


def replay_steps(machine_cls: type[ConformanceMachine], steps: list[dict[str, Any]]) -> None:
    """Run the steps on a fresh machine; raises the CheckFailure the run ends with, if any."""
    machine = machine_cls()
    try:
        machine.invariants_hold()
        for step in steps:
            args = {k: _decode(machine, v) for k, v in step["args"].items()}
            getattr(machine, "do_" + step["rule"])(**args)
            machine.invariants_hold()
    finally:
        machine.teardown()


def still_fails(machine_cls: type[ConformanceMachine], steps: list[dict[str, Any]],
                check_id: str) -> bool:
    """True when the steps still end in a failure of the same check."""
    try:
        replay_steps(machine_cls, steps)
    except CheckFailure as failure:
        return failure.check_id == check_id
    except (KeyError, IndexError, ZeroDivisionError):
        return False  # a deleted step produced a handle a later step needs
    return False


def minimise(machine_cls: type[ConformanceMachine], steps: list[dict[str, Any]],
             check_id: str) -> list[dict[str, Any]]:
    """Delete steps one at a time while the same check still fails.

    Hypothesis' shrinker leaves alloc/free pairs that do nothing; this pass removes them
    (lesson 6 of the prior-art survey) and costs one replay per step.
    """
    current = list(steps)
    i = len(current) - 1
    while i >= 0:
        candidate = current[:i] + current[i + 1:]
        if still_fails(machine_cls, candidate, check_id):
            current = candidate
        i -= 1
    return current
