"""What a state invariant sees: the implementation's views after a step, and the ledger."""

from __future__ import annotations

import functools

import attrs
import numpy as np

from invariants.ledger import Ledger
from specs.buddy import BuddyView, Capability, PageAllocator, PageState
from specs.machine import MachineConfig


@attrs.define
class BuddySnapshot:
    """The state after a step.  ``pages`` is fetched on first use: it costs O(pages)."""

    impl: PageAllocator
    view: BuddyView
    ledger: Ledger | None = None
    _arrays: dict[str, np.ndarray] = attrs.field(factory=dict, init=False, repr=False)

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

    def array(self, field: str) -> np.ndarray:
        """One page_state field as a numpy array, converted once per snapshot."""
        cache = self._arrays
        if field not in cache:
            cache[field] = np.asarray(getattr(self.pages, field))
        return cache[field]


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
