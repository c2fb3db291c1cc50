"""Steps per second of the buddy state machine beside a trivial Hypothesis machine, one run.

Goal (issue: foundation, bench b): the lockstep machine on fastmodel runs at least half the
trivial machine's rate.  Both machines run under the same settings in the same process, so the
ratio cancels the machine's speed; Hypothesis' own per-step cost (drawing a rule and its
arguments) is the floor both pay.

    python bench/bench_lockstep_rate.py [--examples 200] [--steps 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)
from rich.console import Console
from rich.table import Table

from invariants.registry import LOCKSTEP, PLUGIN, checks_for
from specs.machine import preset
from stateful_tests.buddy_machine import BuddyMachineBase, make_buddy_machine
from stateful_tests.common import MachineSpec
from vmconform.registry import resolve

STEPS = {"n": 0, "rules": 0}


class TrivialMachine(RuleBasedStateMachine):
    """Two rules and an invariant over a list: Hypothesis' own cost per step, nearly alone."""

    items = Bundle("items")

    def __init__(self) -> None:
        super().__init__()
        self.live: list[int] = []

    @rule(target=items, value=st.integers(0, 1 << 20), cpu=st.integers(0, 1))
    def push(self, value: int, cpu: int) -> int:
        STEPS["n"] += 1
        STEPS["rules"] += 1
        self.live.append(value)
        return value

    @rule(item=consumes(items), cpu=st.integers(0, 1))
    def pop(self, item: int, cpu: int) -> None:
        STEPS["n"] += 1
        STEPS["rules"] += 1
        self.live.remove(item)

    @invariant()
    def bounded(self) -> None:
        assert len(self.live) < 10_000


def counting(machine: type[BuddyMachineBase]) -> type[BuddyMachineBase]:
    """Count steps the same way for the buddy machine."""
    original = machine.step

    def step(self: BuddyMachineBase, op: str, **args: int) -> Any:
        STEPS["n"] += 1
        return original(self, op, **args)

    original_check = machine.invariants_hold

    def invariants_hold(self: BuddyMachineBase) -> None:
        STEPS["rules"] += 1  # Hypothesis runs invariants once after every rule
        original_check(self)

    machine.step = step  # type: ignore[method-assign]
    machine.invariants_hold = invariant()(invariants_hold)  # type: ignore[method-assign]
    return machine


def rate(machine: type[RuleBasedStateMachine], examples: int,
         steps: int) -> tuple[float, int, float]:
    """(plug-in calls per second, calls, rules per second) for one machine."""
    run_settings = settings(max_examples=examples, stateful_step_count=steps, database=None,
                            deadline=None, derandomize=True, phases=[Phase.generate],
                            suppress_health_check=list(HealthCheck))
    STEPS["n"] = STEPS["rules"] = 0
    started = time.perf_counter()
    run_state_machine_as_test(machine, settings=run_settings)
    elapsed = time.perf_counter() - started
    return STEPS["n"] / elapsed, STEPS["n"], STEPS["rules"] / elapsed


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--impl", default="fastmodel")
    args = parser.parse_args()
    enabled = frozenset(c.id for c in checks_for("buddy")) | {LOCKSTEP, PLUGIN}
    factory = resolve(args.impl).factories["buddy"]
    rows: list[tuple[str, type[RuleBasedStateMachine]]] = [("trivial machine", TrivialMachine)]
    for mode in ("lockstep", "contract"):
        caps = factory(preset("tiny")).capabilities
        spec = MachineSpec(factory=factory, impl_name=args.impl, mode=mode,
                           config=preset("tiny"), enabled=enabled, capabilities=caps)
        rows.append((f"buddy {mode} on {args.impl}", counting(make_buddy_machine(spec))))
    table = Table(title=f"state-machine throughput ({args.examples} examples x <= {args.steps} "
                        f"steps, tiny preset, all checks on)")
    for column in ("machine", "calls", "calls/s", "ratio", "rules/s", "ratio"):
        table.add_column(column, justify="right")
    baseline = rule_baseline = None
    for name, machine in rows:
        per_second, count, rules = rate(machine, args.examples, args.steps)
        baseline = baseline or per_second
        rule_baseline = rule_baseline or rules
        table.add_row(name, str(count), f"{per_second:,.0f}", f"{per_second / baseline:.2f}",
                      f"{rules:,.0f}", f"{rules / rule_baseline:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
