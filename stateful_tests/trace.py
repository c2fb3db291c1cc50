"""The record of one run's rule invocations, which a reproducer replays.

Hypothesis prints a failing program too, but that program needs the generated machine class
importable under its name and cannot survive a crash of the process; this trace is plain JSON,
written as the run goes, and replays without Hypothesis (``vmconform replay``).
"""

from __future__ import annotations

from typing import Any

import attrs

_CURRENT: list[Trace] = []

#: How a handle (stateful_tests.common.Handle) is written in a trace: ``{"$ref": id}``.
REF = "$ref"


@attrs.define
class Trace:
    """Rule name and arguments of every step, with handles written as ``{"$ref": id}``."""

    impl: str
    mode: str
    preset: str
    steps: list[dict[str, Any]] = attrs.field(factory=list)

    def rule(self, name: str, **args: Any) -> None:
        """Record a rule before it runs (so a failing step is the last one recorded)."""
        self.steps.append({"rule": name, "args": {k: encode(v) for k, v in args.items()}})

    def to_json(self) -> dict[str, Any]:
        """The trace as a JSON-able dict."""
        return {"impl": self.impl, "mode": self.mode, "preset": self.preset,
                "steps": self.steps}


def encode(value: Any) -> Any:
    """A handle becomes a reference by id; lists and tuples are encoded item by item."""
    from stateful_tests.common import Handle  # noqa: PLC0415  (common imports this module)

    if isinstance(value, Handle):
        return {REF: value.id}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def set_current_trace(trace: Trace) -> None:
    """Called by each machine as it starts: the last one started is the run that failed."""
    _CURRENT[:] = [trace]


def current_trace() -> Trace | None:
    """The trace of the most recent run."""
    return _CURRENT[0] if _CURRENT else None
