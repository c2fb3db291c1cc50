"""Plug-ins that misbehave rather than mis-allocate: they raise, hang, return the wrong type,
fail to boot or lack a method.  ``tests/test_plugin_faults.py`` checks that each one is
reported as a PLUGIN failure naming the step, and that the runner itself never raises.

None of these has a ``target``: they are not mutants of a spec ID.
"""

from __future__ import annotations

import os
import time
from typing import Any

from refmodel.buddy import RefBuddy
from specs.buddy import BuddyView, PageInfo, PageState
from specs.machine import MachineConfig

#: How long HangsInFreePages sleeps: far beyond any step timeout a test uses.
HANG_SECONDS = 60.0


class RaisesInAlloc(RefBuddy):
    """alloc_pages raises instead of returning a pfn or None."""

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """Always raises RuntimeError."""
        raise RuntimeError("allocator exploded")


class AllocReturnsHexString(RefBuddy):
    """alloc_pages returns the pfn as a hex string."""

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> Any:
        """'0x10' instead of 16."""
        return "0x10"


class AllocReturnsTrue(RefBuddy):
    """alloc_pages returns True (a bool is an int in Python, but not a pfn)."""

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> Any:
        """True instead of a pfn."""
        return True


class FreeReturnsFloat(RefBuddy):
    """free_pages returns a float instead of 0 or -errno."""

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> Any:
        """1.5 instead of an int."""
        return 1.5


class HangsInFreePages(RefBuddy):
    """free_pages never returns (within any sensible step timeout)."""

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """Sleeps for HANG_SECONDS."""
        time.sleep(HANG_SECONDS)
        return 0


def factory_raises(config: MachineConfig) -> RefBuddy:
    """A factory that cannot boot the machine."""
    raise OSError(f"cannot map the allocator's shared library for {config.name}")


class Forwarding:
    """A plug-in that is not a RefBuddy subclass but forwards each call to one."""

    def __init__(self, config: MachineConfig) -> None:
        self._ref = RefBuddy(config)
        self.config = config
        self.capabilities = self._ref.capabilities

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """RefBuddy.alloc_pages."""
        return self._ref.alloc_pages(gfp_mask, order, cpu)

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """RefBuddy.free_pages."""
        return self._ref.free_pages(pfn, order, cpu)

    def get_page(self, pfn: int) -> int:
        """RefBuddy.get_page."""
        return self._ref.get_page(pfn)

    def put_page(self, pfn: int, cpu: int = 0) -> int:
        """RefBuddy.put_page."""
        return self._ref.put_page(pfn, cpu)

    def split_page(self, pfn: int, order: int) -> int:
        """RefBuddy.split_page."""
        return self._ref.split_page(pfn, order)

    def view(self) -> BuddyView:
        """RefBuddy.view."""
        return self._ref.view()

    def page_state(self) -> PageState:
        """RefBuddy.page_state."""
        return self._ref.page_state()

    def page(self, pfn: int) -> PageInfo | None:
        """RefBuddy.page."""
        return self._ref.page(pfn)


class LacksDrainPages(Forwarding):
    """A complete allocator except that drain_pages is missing, though it declares PCP."""


class LacksCapabilities(Forwarding):
    """An allocator with every method but no ``capabilities`` attribute."""

    def __init__(self, config: MachineConfig) -> None:
        super().__init__(config)
        del self.capabilities

    def drain_pages(self, cpu: int) -> int:
        """RefBuddy.drain_pages."""
        return self._ref.drain_pages(cpu)


class CapabilitiesAsStrings(RefBuddy):
    """capabilities is a set of strings rather than a frozenset of Capability."""

    def __init__(self, config: MachineConfig) -> None:
        super().__init__(config)
        self.capabilities = {"pcp", "refcount"}  # type: ignore[assignment]


class CapabilitiesNotIterable(RefBuddy):
    """capabilities is an int."""

    def __init__(self, config: MachineConfig) -> None:
        super().__init__(config)
        self.capabilities = 5  # type: ignore[assignment]


class AbortsInAlloc(RefBuddy):
    """alloc_pages kills the process, as a crash in native code would."""

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """os.abort(): SIGABRT, no Python exception, no cleanup."""
        os.abort()
