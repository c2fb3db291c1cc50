"""What a state invariant sees: the implementation's views after a step, and the ledger."""

from __future__ import annotations

import functools

import attrs

from specs.buddy import BuddyView, Capability, PageAllocator, PageState
from specs.machine import MachineConfig

from invariants.ledger import Ledger


@attrs.define
class BuddySnapshot:
    """The state after a step.  ``pages`` is fetched on first use: it costs O(pages)."""

    impl: PageAllocator
    view: BuddyView
    ledger: Ledger | None = None

    @property
    def config(self) -> MachineConfig:
        """The machine the implementation booted."""
        return self.impl.config

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What the implementation declares."""
        return self.impl.capabilities

    @functools.cached_property
    def pages(self) -> PageState:
        """page_state(), taken once per snapshot."""
        return self.impl.page_state()


@attrs.frozen
class BuddyStep:
    """One operation as a step rule judges it: arguments, result, state before and after."""

    op: str
    args: dict[str, int]
    result: int | None
    before: BuddyView
    after: BuddyView
    #: the caller's ledger before the step
    ledger: Ledger
    impl: PageAllocator

    @property
    def config(self) -> MachineConfig:
        """The machine the implementation booted."""
        return self.impl.config
