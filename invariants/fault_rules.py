"""Operation rules of the composed kernel, FAULT-R1 (``specs/fault.md``).

A rule judges one step from its arguments and result, so it holds in contract mode whatever
pages an implementation picks.
"""

from __future__ import annotations

from typing import Any

import attrs

from invariants.registry import step_rule


@attrs.frozen
class FaultStep:
    """One operation as a step rule judges it."""

    op: str
    args: dict[str, Any]
    result: Any


@step_rule("FAULT-R1", "copy_from_user zero-fills what it did not copy",
           ops=("copy_from_user",))
def copy_from_user_tail(step: FaultStep) -> list[str]:
    """The uncopied count is within [0, n], the buffer is n bytes long, and its last
    ``uncopied`` bytes are zero, so a caller that ignores the count never sees stale kernel
    memory [4.6: arch/x86/lib/usercopy_64.c copy_user_handle_tail]."""
    if not isinstance(step.result, tuple):
        return []
    n = step.args["n"]
    left, buffer = step.result
    if not 0 <= left <= n or len(buffer) != n:
        return [f"copy_from_user of {n} bytes returned {left} uncopied and a buffer of "
                f"{len(buffer)} bytes"]
    tail = buffer[n - left:]
    if any(tail):
        first = next(i for i, b in enumerate(tail) if b)
        return [f"copy_from_user(addr={step.args['addr']:#x}, n={n}) left {left} bytes "
                f"uncopied, but the buffer's tail is not zeroed: byte {n - left + first} is "
                f"{tail[first]:#04x}"]
    return []
