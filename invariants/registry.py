"""The registry that ties spec IDs to checkers.

Two kinds of check exist, as ``specs/README.md`` defines: *state invariants* (``-I`` IDs) take a
snapshot of the implementation after a step; *step rules* (``-R`` IDs) take the record of one
operation (arguments, result, state before and after).  A whole-repo test keeps the IDs here,
the headings in ``specs/*.md`` and the mutants in ``tests/mutants/`` in one-to-one step.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any, Final

import attrs

#: Pseudo-checks that are not spec IDs: agreement with the reference model, and a plug-in
#: that raised, hung, crashed or returned the wrong type.
LOCKSTEP: Final = "LOCKSTEP"
PLUGIN: Final = "PLUGIN"


class Kind(enum.Enum):
    """What a checker receives."""

    STATE = "state"
    STEP = "step"


class Cost(enum.Enum):
    """How often a state invariant can afford to run: after every step, or on sweeps."""

    VIEW = "view"  # O(free blocks): every step
    PAGES = "pages"  # O(pages): every sweep_every steps and at teardown


@attrs.frozen
class Check:
    """One registered checker."""

    id: str
    title: str
    kind: Kind
    fn: Callable[[Any], Iterable[str]]
    needs: frozenset[enum.Enum] = frozenset()
    cost: Cost = Cost.VIEW
    #: step rules only: the operations the rule judges
    ops: frozenset[str] = frozenset()
    #: needs the caller's ledger of held blocks (a state machine provides one)
    needs_ledger: bool = False

    @property
    def subsystem(self) -> str:
        """``BUDDY-I3`` -> ``buddy``."""
        return self.id.split("-", 1)[0].lower()

    def applies_to(self, capabilities: frozenset[enum.Enum]) -> bool:
        """False when the implementation lacks a capability this check needs."""
        return self.needs <= capabilities


class CheckFailure(AssertionError):
    """A check found a problem.  Carries the check ID so reports can be per-ID."""

    def __init__(self, check_id: str, message: str) -> None:
        super().__init__(f"{check_id}: {message}")
        self.check_id = check_id
        self.message = message


REGISTRY: dict[str, Check] = {}


def _register(check: Check) -> None:
    if check.id in REGISTRY:
        raise ValueError(f"check {check.id} registered twice")
    REGISTRY[check.id] = check


def state_invariant(
    check_id: str, title: str, *, needs: Iterable[enum.Enum] = (), cost: Cost = Cost.VIEW,
    needs_ledger: bool = False,
) -> Callable[[Callable[[Any], Iterable[str]]], Callable[[Any], Iterable[str]]]:
    """Register a state invariant under its spec ID."""

    def decorate(fn: Callable[[Any], Iterable[str]]) -> Callable[[Any], Iterable[str]]:
        _register(Check(id=check_id, title=title, kind=Kind.STATE, fn=fn,
                        needs=frozenset(needs), cost=cost, needs_ledger=needs_ledger))
        return fn

    return decorate


def step_rule(
    check_id: str, title: str, *, ops: Iterable[str], needs: Iterable[enum.Enum] = (),
) -> Callable[[Callable[[Any], Iterable[str]]], Callable[[Any], Iterable[str]]]:
    """Register an operation rule under its spec ID."""

    def decorate(fn: Callable[[Any], Iterable[str]]) -> Callable[[Any], Iterable[str]]:
        _register(Check(id=check_id, title=title, kind=Kind.STEP, fn=fn, needs=frozenset(needs),
                        ops=frozenset(ops), needs_ledger=True))
        return fn

    return decorate


def checks_for(subsystem: str) -> list[Check]:
    """Every check of one subsystem, in ID order (I before R, numerically)."""
    _load_all()
    found = [check for check in REGISTRY.values() if check.subsystem == subsystem]
    return sorted(found, key=lambda c: (c.id.split("-")[1][0], int(c.id.split("-")[1][1:])))


#: Modules of this package that hold no checkers (importing them registers nothing).
_NOT_CHECKERS = frozenset({"registry", "ledger", "snapshot", "render"})


def _load_all() -> None:
    """Import every checker module of this package so its decorators run.

    Every module is a candidate, so a new subsystem's checkers register without an edit
    here.
    """
    import importlib  # noqa: PLC0415
    import pkgutil  # noqa: PLC0415

    import invariants  # noqa: PLC0415  (the checker modules import this one)

    for info in pkgutil.iter_modules(invariants.__path__):
        if info.name not in _NOT_CHECKERS and not info.name.startswith("_"):
            importlib.import_module(f"invariants.{info.name}")
