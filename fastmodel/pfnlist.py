"""Doubly linked lists of pfns that share one pair of link dicts: ``struct list_head`` again.

The kernel threads a free page onto a list through ``page->lru`` inside its own struct page,
and ``list_del`` needs no list head: a page unlinks itself from its neighbours.  This module
keeps that shape.  A :class:`ListStore` owns two dicts (pfn -> next, pfn -> prev) that every
list of one machine shares; each :class:`PfnList` is only a sentinel key (a negative int,
since pfns are never negative).  So:

* memory is proportional to the number of pfns on lists (free block heads and pcp pages),
  never to the number of pages, and empty lists cost two dict entries each;
* ``ListStore.version`` counts every change to any of its lists, so a snapshot taken of them
  can be reused while the version stands (one store per zone gives a per-zone version);
* ``ListStore.unlink`` removes a pfn from whichever list holds it in O(1), which is what
  ``del_from_free_area`` wants (the reference model searches the four migratetype lists);
* the list order and every operation's effect on it are those of ``refmodel.pfnlist.PfnList``.

Complexity: every operation is O(1) except iteration and ``len`` (O(length)).
"""

from __future__ import annotations

from collections.abc import Iterator


class ListStore:
    """The links of a family of lists: ``next[pfn]`` and ``prev[pfn]``.

    A pfn is on at most one list at a time (a free block head is on one free list, a pcp page
    on one pcp list), exactly as a struct page has one ``lru``.
    """

    __slots__ = ("next", "nr_lists", "prev", "version")

    def __init__(self) -> None:
        self.next: dict[int, int] = {}
        self.prev: dict[int, int] = {}
        self.nr_lists = 0
        #: bumped by every change to any list of this store
        self.version = 0

    def new_list(self) -> PfnList:
        """LIST_HEAD_INIT: a new empty list whose sentinel is a fresh negative key."""
        self.nr_lists += 1
        head = -self.nr_lists
        self.next[head] = head
        self.prev[head] = head
        return PfnList(self, head)

    def unlink(self, pfn: int) -> None:
        """list_del, from whichever list holds pfn; KeyError if it is on none."""
        nxt = self.next
        prv = self.prev
        prev = prv.pop(pfn)
        after = nxt.pop(pfn)
        nxt[prev] = after
        prv[after] = prev
        self.version += 1


class PfnList:
    """One list: an ordered set of pfns with list_head's operations, each O(1)."""

    __slots__ = ("_next", "_prev", "_store", "head")

    def __init__(self, store: ListStore, head: int) -> None:
        self._store = store
        self._next = store.next
        self._prev = store.prev
        #: the sentinel key: a negative int unique to this list
        self.head = head

    def add_head(self, pfn: int) -> None:
        """list_add."""
        nxt = self._next
        prv = self._prev
        head = self.head
        first = nxt[head]
        nxt[head] = pfn
        nxt[pfn] = first
        prv[first] = pfn
        prv[pfn] = head
        self._store.version += 1

    def add_tail(self, pfn: int) -> None:
        """list_add_tail."""
        nxt = self._next
        prv = self._prev
        head = self.head
        last = prv[head]
        prv[head] = pfn
        prv[pfn] = last
        nxt[last] = pfn
        nxt[pfn] = head
        self._store.version += 1

    def remove(self, pfn: int) -> None:
        """list_del; KeyError if pfn is on no list (the caller knows it is on this one)."""
        nxt = self._next
        prv = self._prev
        prev = prv.pop(pfn)
        after = nxt.pop(pfn)
        nxt[prev] = after
        prv[after] = prev
        self._store.version += 1

    def pop_first(self) -> int | None:
        """list_first_entry_or_null, then list_del: one call where hot paths made two."""
        nxt = self._next
        pfn = nxt[self.head]
        if pfn < 0:
            return None
        prv = self._prev
        after = nxt.pop(pfn)
        del prv[pfn]
        nxt[self.head] = after
        prv[after] = self.head
        self._store.version += 1
        return pfn

    def pop_last(self) -> int | None:
        """list_last_entry (or None when empty), then list_del."""
        prv = self._prev
        pfn = prv[self.head]
        if pfn < 0:
            return None
        nxt = self._next
        before = prv.pop(pfn)
        del nxt[pfn]
        prv[self.head] = before
        nxt[before] = self.head
        self._store.version += 1
        return pfn

    def first(self) -> int | None:
        """list_first_entry_or_null."""
        pfn = self._next[self.head]
        return None if pfn < 0 else pfn

    def last(self) -> int | None:
        """list_last_entry, or None when empty."""
        pfn = self._prev[self.head]
        return None if pfn < 0 else pfn

    def __bool__(self) -> bool:
        return self._next[self.head] >= 0

    def __len__(self) -> int:
        """Complexity: O(length); callers on hot paths keep their own counts."""
        return sum(1 for _ in self)

    def __iter__(self) -> Iterator[int]:
        nxt = self._next
        pfn = nxt[self.head]
        while pfn >= 0:
            yield pfn
            pfn = nxt[pfn]

    def to_tuple(self) -> tuple[int, ...]:
        """The pfns head first, as a tuple (what views hold).  Complexity: O(length)."""
        nxt = self._next
        out = []
        pfn = nxt[self.head]
        while pfn >= 0:
            out.append(pfn)
            pfn = nxt[pfn]
        return tuple(out)
