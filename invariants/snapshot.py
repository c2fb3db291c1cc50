"""What a state invariant sees: the implementation's views after a step, and the ledger.

Checkers are vectorised so that they cost little at millions of pages on any implementation:
a snapshot turns the view's free and pcp lists into arrays once (:class:`ListedBlocks`), and
walks the per-page sequences of ``page_state()`` in chunks (:meth:`BuddySnapshot.chunks`), so
a checker's temporaries are a few chunk-sized arrays, never several whole-memory ones.
"""

from __future__ import annotations

import array
import functools
import itertools
from collections.abc import Iterator, Sequence

import attrs
import numpy as np
import numpy.typing as npt

from invariants.ledger import HeldArrays, Ledger
from specs.buddy import BuddyView, Capability, PageAllocator, PageState
from specs.machine import MachineConfig

#: Pages per chunk when a checker walks page_state: big enough that numpy's per-call cost
#: vanishes, small enough that a chunk's temporaries stay in cache (a bool chunk is 256 KiB).
CHUNK_PAGES = 1 << 18

#: Sequences numpy reads in place (np.asarray makes no copy); others are read chunk by chunk.
_BUFFERS = (np.ndarray, array.array, memoryview, bytes, bytearray)


@attrs.frozen(eq=False)
class ListedBlocks:
    """Every block on the view's free lists, or every page on its pcp lists, as parallel
    arrays in list order (zone by zone).  ``zone`` is the zone's position in ``view.zones``;
    ``kind`` is the migratetype of the list for free blocks and the CPU for pcp pages."""

    pfn: npt.NDArray[np.int64]
    order: npt.NDArray[np.int64]
    kind: npt.NDArray[np.int64]
    zone: npt.NDArray[np.int64]

    @property
    def ends(self) -> npt.NDArray[np.int64]:
        """One past each block's last pfn."""
        return self.pfn + np.left_shift(np.int64(1), self.order)


def _listed(lists: list[tuple[tuple[int, int, int], Sequence[int]]]) -> ListedBlocks:
    """((zone, order, kind), pfns) per list -> ListedBlocks."""
    lengths = [len(pfns) for _, pfns in lists]
    total = sum(lengths)
    pfn = np.fromiter(itertools.chain.from_iterable(pfns for _, pfns in lists),
                      dtype=np.int64, count=total)
    meta = np.array([key for key, _ in lists], dtype=np.int64).reshape(-1, 3)
    meta = np.repeat(meta, lengths, axis=0)
    return ListedBlocks(pfn=pfn, zone=meta[:, 0], order=meta[:, 1], kind=meta[:, 2])


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

    @functools.cached_property
    def free(self) -> ListedBlocks:
        """Every free block (kind: the migratetype of its list).  O(free blocks), once."""
        return _listed([((z, order, mt), pfns)
                        for z, zone in enumerate(self.view.zones)
                        for order, lists in enumerate(zone.free_lists)
                        for mt, pfns in enumerate(lists) if pfns])

    @functools.cached_property
    def pcp(self) -> ListedBlocks:
        """Every pcp page, order 0 (kind: its CPU).  O(pcp pages), once."""
        return _listed([((z, 0, cpu), pfns)
                        for z, zone in enumerate(self.view.zones)
                        for cpu, pcp in enumerate(zone.pcp)
                        for pfns in pcp.lists if pfns])

    @functools.cached_property
    def held(self) -> HeldArrays:
        """The ledger's blocks as arrays, once per snapshot (empty without a ledger)."""
        return (self.ledger or Ledger()).arrays()

    def array(self, field: str) -> np.ndarray:
        """One page_state field as a whole numpy array, converted once per snapshot.

        Costs a whole-memory array for an implementation whose sequences are not buffers;
        checkers use :meth:`chunks` instead.
        """
        cache = self._arrays
        if field not in cache:
            cache[field] = np.asarray(getattr(self.pages, field))
        return cache[field]

    def chunks(self, *fields: str, size: int | None = None
               ) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
        """(first pfn, arrays) for consecutive pfn ranges (CHUNK_PAGES by default) of these
        page_state fields.

        Buffers (numpy arrays, array.array) are viewed in place and sliced; other sequences
        are sliced first and converted a chunk at a time (the contract allows any Sequence).
        """
        sources = []
        length = 0
        for field in fields:
            source = getattr(self.pages, field)
            if field in self._arrays or isinstance(source, _BUFFERS):
                source = self.array(field)
            sources.append(source)
            length = max(length, len(source))
        step = CHUNK_PAGES if size is None else size
        for lo in range(0, length, step):
            yield lo, tuple(_chunk(source, lo, lo + step) for source in sources)


def _chunk(source: Sequence[int] | np.ndarray, lo: int, hi: int) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source[lo:hi]
    return np.asarray(source[lo:hi])


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
