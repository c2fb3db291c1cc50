"""The caller's ledger: which blocks the test holds, and how many references it has.

A state machine keeps one beside the implementation under test and updates it from the
results the implementation returns.  It is what lets contract mode judge an allocator with a
different placement policy: whatever pfns it hands out, the blocks the caller holds, the free
lists and the pcp lists must still partition memory (BUDDY-I1, BUDDY-I2).
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from specs.machine import MAX_ORDER


@attrs.frozen
class Held:
    """One block the caller holds (immutable, so copying a ledger is a dict copy)."""

    order: int
    refs: int
    compound: bool


@attrs.define
class Ledger:
    """head pfn -> Held, for every block the caller holds."""

    held: dict[int, Held] = attrs.field(factory=dict)

    def copy(self) -> Ledger:
        """A deep copy, for the 'before' side of a step record."""
        return Ledger(dict(self.held))

    def owner(self, pfn: int) -> int | None:
        """Head pfn of the held block containing pfn.  Blocks are aligned to their size, so
        the head is pfn rounded down to one of MAX_ORDER sizes."""
        for order in range(MAX_ORDER):
            head = pfn & ~((1 << order) - 1)
            held = self.held.get(head)
            if held is not None and held.order == order:
                return head
        return None

    def blocks(self) -> Iterator[tuple[int, int]]:
        """(pfn, order) of every held block."""
        for pfn, held in self.held.items():
            yield pfn, held.order

    def nr_pages(self) -> int:
        """Pages the caller holds."""
        return sum(1 << held.order for held in self.held.values())

    # -- updates from results the implementation returned --------------------------------------

    def on_alloc(self, pfn: int, order: int, compound: bool) -> None:
        """alloc_pages returned pfn."""
        self.held[pfn] = Held(order=order, refs=1, compound=compound)

    def on_get(self, head: int) -> None:
        """get_page succeeded on a page of this block."""
        held = self.held[head]
        self.held[head] = attrs.evolve(held, refs=held.refs + 1)

    def on_put(self, head: int) -> None:
        """free_pages or put_page succeeded: one reference fewer, gone at zero."""
        held = self.held[head]
        if held.refs > 1:
            self.held[head] = attrs.evolve(held, refs=held.refs - 1)
        else:
            del self.held[head]

    def on_split(self, head: int) -> None:
        """split_page succeeded: 2**order independent order-0 pages, each with one reference."""
        held = self.held[head]
        for pfn in range(head + 1, head + (1 << held.order)):
            self.held[pfn] = Held(order=0, refs=1, compound=False)
        self.held[head] = attrs.evolve(held, order=0)
