"""Replaying a reproducer: the steps of a failure, run again with the same checks."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from invariants.registry import CheckFailure
from specs.machine import preset
from stateful_tests.replay import replay_steps
from vmconform.checking import machine_class

console = Console(highlight=False, emoji=False)


def replay_data(data: dict[str, Any]) -> int:
    """Run the recorded steps; print the outcome; 1 if a check fails, 0 if none does."""
    try:
        machine = machine_class(data["impl"], data["subsystem"], data["mode"],
                                preset(data["preset"]), frozenset(data["enabled"]))
    except (LookupError, ImportError) as exc:
        console.print(f"[bold red]cannot replay[/]: {escape(str(exc))}")
        return 2
    console.print(f"replaying {len(data['steps'])} steps on {data['impl']} ({data['mode']}, "
                  f"preset {data['preset']}, seed {data['seed']}); expecting {data['check_id']}")
    for number, step in enumerate(data["steps"], 1):
        args = ", ".join(f"{k}={v}" for k, v in step["args"].items())
        console.print(escape(f"  {number:3}. {step['rule']}({args})"))
    try:
        replay_steps(machine, data["steps"])
    except CheckFailure as failure:
        console.print(f"[bold red]FAIL[/] {escape(failure.check_id)}: {escape(failure.message)}")
        return 1
    console.print(f"[bold green]no failure[/]: {data['check_id']} did not reproduce")
    return 0


def replay_file(path: Path) -> int:
    """A reproducer ``.py`` (run as a script) or the JSON inside one."""
    if path.suffix == ".py":
        namespace = runpy.run_path(str(path))
        return replay_data(namespace["DATA"])
    return replay_data(json.loads(path.read_text(encoding="utf-8")))
