"""The caller's ledger: which blocks the test holds, and how many references it has.

A state machine keeps one beside the implementation under test and updates it from the
results the implementation returns.  It is what lets contract mode judge an allocator with a
different placement policy: whatever pfns it hands out, the blocks the caller holds, the free
lists and the pcp lists must still partition memory (BUDDY-I1, BUDDY-I2).

Two forms, one meaning.  A state machine's ledger is a dict of :class:`Held` records, which
its per-step updates need.  A caller that tracks hundreds of thousands of blocks (the scale
bench) builds one from arrays instead (:meth:`Ledger.from_arrays`): a dict of that many
records costs about 150 bytes and a microsecond a block to build, where the arrays cost 17
bytes and nothing per block.  Checkers read either through :meth:`Ledger.arrays`; the dict
is only built if something asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import numpy as np
import numpy.typing as npt

from specs.machine import MAX_ORDER


@attrs.frozen
class Held:
    """One block the caller holds (immutable, so copying a ledger is a dict copy)."""

    order: int
    refs: int
    compound: bool


@attrs.frozen(eq=False)
class HeldArrays:
    """Every held block as parallel read-only arrays, in no particular order."""

    heads: npt.NDArray[np.int64]
    orders: npt.NDArray[np.int64]
    compound: npt.NDArray[np.bool_]

    @property
    def sizes(self) -> npt.NDArray[np.int64]:
        """Pages per block."""
        return np.left_shift(np.int64(1), self.orders)


def _frozen(array: npt.NDArray[np.generic]) -> None:
    array.flags.writeable = False


@attrs.define(init=False, eq=False)
class Ledger:
    """head pfn -> Held, for every block the caller holds."""

    _held: dict[int, Held] | None
    #: the array form this ledger was built from, until the dict is first asked for
    _packed: HeldArrays | None

    def __init__(self, held: dict[int, Held] | None = None) -> None:
        self._held = {} if held is None else held
        self._packed = None

    @classmethod
    def from_arrays(cls, heads: npt.ArrayLike, orders: npt.ArrayLike,
                    compound: npt.ArrayLike) -> Ledger:
        """A ledger of blocks each held once: head pfns, orders and compound flags."""
        packed = HeldArrays(heads=np.array(heads, dtype=np.int64),
                            orders=np.array(orders, dtype=np.int64),
                            compound=np.array(compound, dtype=np.bool_))
        if not packed.heads.shape == packed.orders.shape == packed.compound.shape:
            raise ValueError("heads, orders and compound differ in length")
        for array in (packed.heads, packed.orders, packed.compound):
            _frozen(array)
        ledger = cls()
        ledger._held = None
        ledger._packed = packed
        return ledger

    @property
    def held(self) -> dict[int, Held]:
        """The dict form (built on first use from the arrays of :meth:`from_arrays`)."""
        if self._held is None:
            packed = self._packed
            assert packed is not None
            self._held = {pfn: Held(order=order, refs=1, compound=compound)
                          for pfn, order, compound in zip(packed.heads.tolist(),
                                                          packed.orders.tolist(),
                                                          packed.compound.tolist(), strict=True)}
            self._packed = None  # the dict is the truth from now on: callers may update it
        return self._held

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ledger):
            return NotImplemented
        return self.held == other.held

    __hash__ = None  # type: ignore[assignment]  # mutable

    def arrays(self) -> HeldArrays:
        """Every held block as arrays, for vectorised checkers.

        Complexity: O(1) for a ledger built from arrays, O(held) Python for a dict one (a state
        machine's, which holds tens of blocks).
        """
        if self._packed is not None:
            return self._packed
        held = self.held
        count = len(held)
        packed = HeldArrays(
            heads=np.fromiter(held, dtype=np.int64, count=count),
            orders=np.fromiter((h.order for h in held.values()), dtype=np.int64, count=count),
            compound=np.fromiter((h.compound for h in held.values()), dtype=np.bool_,
                                 count=count))
        for array in (packed.heads, packed.orders, packed.compound):
            _frozen(array)
        return packed

    def count(self) -> int:
        """How many blocks the caller holds."""
        return self._packed.heads.size if self._packed is not None else len(self.held)

    def copy(self) -> Ledger:
        """A deep copy, for the 'before' side of a step record."""
        if self._packed is not None:  # read-only arrays can be shared
            twin = Ledger()
            twin._held = None
            twin._packed = self._packed
            return twin
        return Ledger(dict(self.held))

    def owner(self, pfn: int) -> int | None:
        """Head pfn of the held block containing pfn.  Blocks are aligned to their size, so
        the head is pfn rounded down to one of MAX_ORDER sizes."""
        held = self.held
        for order in range(MAX_ORDER):
            head = pfn & ~((1 << order) - 1)
            found = held.get(head)
            if found is not None and found.order == order:
                return head
        return None

    def blocks(self) -> Iterator[tuple[int, int]]:
        """(pfn, order) of every held block."""
        if self._packed is not None:
            yield from zip(self._packed.heads.tolist(), self._packed.orders.tolist(),
                           strict=True)
            return
        for pfn, held in self.held.items():
            yield pfn, held.order

    def nr_pages(self) -> int:
        """Pages the caller holds."""
        if self._packed is not None:
            return int(self._packed.sizes.sum())
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
