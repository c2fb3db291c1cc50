"""A doubly linked list of pfns: the model's ``struct list_head``.

The kernel threads free pages through ``page->lru``; what matters for the allocator's
behaviour is only the order of the list and O(1) insertion at either end and removal from the
middle (a buddy leaving its list during a merge).  Two dicts give exactly that.
"""

from __future__ import annotations

from collections.abc import Iterator

_HEAD = -1  # the sentinel: pfns are never negative


class PfnList:
    """An ordered set of pfns with list_head's operations, each O(1)."""

    __slots__ = ("_next", "_prev", "_snapshot", "version")

    def __init__(self) -> None:
        self._next: dict[int, int] = {_HEAD: _HEAD}
        self._prev: dict[int, int] = {_HEAD: _HEAD}
        #: bumped by every change, so a snapshot of an unchanged list can be reused
        self.version = 0
        self._snapshot: tuple[int, tuple[int, ...]] = (0, ())

    def add_head(self, pfn: int) -> None:
        """list_add."""
        self._link(pfn, _HEAD, self._next[_HEAD])

    def add_tail(self, pfn: int) -> None:
        """list_add_tail."""
        self._link(pfn, self._prev[_HEAD], _HEAD)

    def remove(self, pfn: int) -> None:
        """list_del; KeyError if absent."""
        if pfn == _HEAD:
            raise KeyError(pfn)
        prev = self._prev.pop(pfn)
        nxt = self._next.pop(pfn)
        self._next[prev] = nxt
        self._prev[nxt] = prev
        self.version += 1

    def first(self) -> int | None:
        """list_first_entry_or_null."""
        pfn = self._next[_HEAD]
        return None if pfn == _HEAD else pfn

    def last(self) -> int | None:
        """list_last_entry, or None when empty."""
        pfn = self._prev[_HEAD]
        return None if pfn == _HEAD else pfn

    def __contains__(self, pfn: object) -> bool:
        return pfn != _HEAD and pfn in self._next

    def __len__(self) -> int:
        return len(self._next) - 1

    def __bool__(self) -> bool:
        return self._next[_HEAD] != _HEAD

    def to_tuple(self) -> tuple[int, ...]:
        """The pfns head first, as a tuple (what views hold); the tuple of an unchanged
        list is handed out again, since a view is taken after every step of a machine."""
        version, snapshot = self._snapshot
        if version == self.version:
            return snapshot
        nxt = self._next
        out = []
        pfn = nxt[_HEAD]
        while pfn != _HEAD:
            out.append(pfn)
            pfn = nxt[pfn]
        self._snapshot = (self.version, tuple(out))
        return self._snapshot[1]

    def __iter__(self) -> Iterator[int]:
        pfn = self._next[_HEAD]
        while pfn != _HEAD:
            yield pfn
            pfn = self._next[pfn]

    def _link(self, pfn: int, prev: int, nxt: int) -> None:
        if pfn in self._next:
            raise ValueError(f"pfn {pfn} is already on this list")
        self._next[prev] = pfn
        self._prev[pfn] = prev
        self._next[pfn] = nxt
        self._prev[nxt] = pfn
        self.version += 1
