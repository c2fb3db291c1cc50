"""page_state() for the fast buddy allocator: a compact copy, each field derived when read.

The reference model's ``page_state`` copies five 8-byte fields per page (40 bytes a page,
160 MiB at 4M pages).  Most of struct page here is one byte (``pstate``: private, PageBuddy,
PG_head, compound tail) from which ``_mapcount``, ``private``, ``flags`` and
``compound_head`` follow, so a snapshot copies only that byte, ``_count`` (narrowed to one
byte while every count fits, as they almost always do) and the list of compound heads:
about 2 bytes a page.  Each field is a :class:`PageField`, a read-only ``Sequence[int]`` that
derives its values from the copy for the range asked for: a slice gives a numpy array of that
range, ``numpy.asarray`` the whole field.  A checker that walks memory in chunks so never
holds a whole-memory array of any field.

The snapshot is a copy: the allocator may change after it is taken, the fields do not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, cast, overload

import numpy as np
import numpy.typing as npt

from specs.buddy import PAGE_BUDDY_MAPCOUNT_VALUE, PageState, PG_head
from specs.machine import MAX_ORDER

# -- pstate: one byte of struct page (fastmodel.buddy keeps one per pfn) -----------------------
#: page_private (the order of a free block's head) lives in the low four bits.
PRIVATE_MASK: Final = 0x0F
#: PageBuddy: _mapcount == PAGE_BUDDY_MAPCOUNT_VALUE.  The reference model's _mapcount is only
#: ever -1 or that value (set_page_order / rmv_page_order are its only writers).
PS_BUDDY: Final = 0x10
#: PG_head in page->flags, the only PG_* bit the model sets.
PS_HEAD: Final = 0x20
#: a compound tail page (compound_head >= 0); its head is found from the aligned candidates.
PS_TAIL: Final = 0x40

#: Pages per step when a field is iterated or converted whole.
CHUNK: Final = 1 << 18

Derive = Callable[[int, int], npt.NDArray[Any]]


class PageField(Sequence[int]):
    """One struct page field for every pfn, derived on read from a snapshot's copy."""

    __slots__ = ("_derive", "_dtype", "_length")

    def __init__(self, length: int, dtype: type[np.generic], derive: Derive) -> None:
        self._length = length
        self._dtype = np.dtype(dtype)
        #: (lo, hi) -> this field for pfns [lo, hi), 0 <= lo <= hi <= length
        self._derive = derive

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...

    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        """A pfn's value, or a read-only numpy array for a slice (derived for that range)."""
        if isinstance(index, slice):
            lo, hi, step = index.indices(self._length)
            if step == 1:
                return _seq(self._derive(lo, max(lo, hi)))
            return _seq(np.asarray(self)[index])
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(f"pfn {index} outside {self._length} pages")
        return int(self._derive(position, position + 1)[0])

    def __iter__(self) -> Iterator[int]:
        for lo in range(0, self._length, CHUNK):
            yield from self._derive(lo, min(lo + CHUNK, self._length)).tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        out = np.empty(self._length, dtype=self._dtype)
        for lo in range(0, self._length, CHUNK):
            hi = min(lo + CHUNK, self._length)
            out[lo:hi] = self._derive(lo, hi)
        out.flags.writeable = False
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"PageField({self._length} pages of {self._dtype})"


def _seq(array: npt.NDArray[Any]) -> Sequence[int]:
    """A numpy array where the contract says Sequence[int] (it allows numpy arrays)."""
    return cast("Sequence[int]", array)


def _read_only(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.flags.writeable = False
    return array


def take(refcount: npt.NDArray[np.int32], pstate: npt.NDArray[np.uint8],
         owner_order: npt.NDArray[np.uint8],
         pageblock_migratetype: npt.NDArray[np.int8]) -> PageState:
    """The snapshot of these per-page arrays (fastmodel.buddy.BuddyState's).

    Complexity: O(pages) numpy: one copy of pstate, one pass to narrow and copy refcount, one
    to find the compound heads.
    """
    nr_pages = pstate.shape[0]
    ps = _read_only(pstate.copy())
    if nr_pages and 0 <= int(refcount.min()) and int(refcount.max()) <= 0xFF:
        counts = _read_only(refcount.astype(np.uint8))
    else:
        counts = _read_only(refcount.copy())
    heads = np.flatnonzero((ps & np.uint8(PS_HEAD)) != 0)  # nonzero is far faster on bools
    heads_plus_one = _read_only(heads + 1)  # the compound_head value of its tails, plus one
    tails_end = _read_only(heads + np.left_shift(np.int64(1), owner_order[heads].astype(np.int64)))

    def refcounts(lo: int, hi: int) -> npt.NDArray[np.int32]:
        return _read_only(counts[lo:hi].astype(np.int32, copy=False))

    def mapcount(lo: int, hi: int) -> npt.NDArray[np.int8]:
        # -1, or PAGE_BUDDY_MAPCOUNT_VALUE on PageBuddy pages: -1 - 127 * PageBuddy
        buddy = (ps[lo:hi] >> np.uint8(PS_BUDDY.bit_length() - 1)) & np.uint8(1)
        out = buddy.view(np.int8)
        out *= np.int8(PAGE_BUDDY_MAPCOUNT_VALUE + 1)
        out -= np.int8(1)
        return _read_only(out)

    def private(lo: int, hi: int) -> npt.NDArray[np.int8]:
        return _read_only((ps[lo:hi] & np.uint8(PRIVATE_MASK)).view(np.int8))

    def flags(lo: int, hi: int) -> npt.NDArray[np.int16]:
        out = (ps[lo:hi] & np.uint8(PS_HEAD)).astype(np.int16)
        out <<= PG_head - (PS_HEAD.bit_length() - 1)
        return _read_only(out)

    def compound_head(lo: int, hi: int) -> npt.NDArray[np.int32]:
        # Compound pages are disjoint, so a running sum of (head + 1) entering at each first
        # tail and leaving after the last gives head + 1 on tails and 0 elsewhere.
        first = np.searchsorted(heads_plus_one, lo - (1 << MAX_ORDER))
        last = np.searchsorted(heads_plus_one, hi)
        value = heads_plus_one[first:last]
        delta = np.zeros(hi - lo + 1, dtype=np.int32)
        np.add.at(delta, np.clip(value - lo, 0, hi - lo), value.astype(np.int32))
        np.add.at(delta, np.clip(tails_end[first:last] - lo, 0, hi - lo),
                  -value.astype(np.int32))
        out = np.cumsum(delta[:-1], dtype=np.int32)
        out -= 1
        return _read_only(out)

    def field(dtype: type[np.generic], derive: Derive) -> Sequence[int]:
        return PageField(nr_pages, dtype, derive)

    return PageState(refcount=field(np.int32, refcounts), mapcount=field(np.int8, mapcount),
                     private=field(np.int8, private), flags=field(np.int16, flags),
                     compound_head=field(np.int32, compound_head),
                     pageblock_migratetype=_seq(_read_only(pageblock_migratetype.copy())))
