"""struct page for user pages, as parallel numpy arrays indexed by pfn, and sparse contents.

The reference kernel keeps one ``Page`` object per user page in a dict.  Here every field
is an array of ``config.nr_pages`` entries: ``member`` (the RSS counter the page is charged
to, -1 when the pfn holds no user page, so the kind and "is a user page" are one byte),
``refcount``, ``mapcount``, ``index``, ``inode`` (0 for none: inode ids start at 1) and
``cached``.  Scalar paths (one fault) go through memoryviews, which return Python ints;
range paths (fork, exit, munmap of a big mapping) work on whole arrays of pfns at once.

Contents are sparse: only a page that was ever written (or read in with non-zero file
bytes) owns a ``bytearray``; every other user page reads as zeros.
"""

from __future__ import annotations

from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

from specs.kernel import RSS_OF, PageView, RssMember

PAGE_SIZE: Final = 4096
#: member value of a pfn that holds no user page
NO_PAGE: Final = -1
ANON: Final = int(RssMember.MM_ANONPAGES)
FILE: Final = int(RssMember.MM_FILEPAGES)
SHMEM: Final = int(RssMember.MM_SHMEMPAGES)
KIND_OF: Final = {int(member): kind for kind, member in RSS_OF.items()}

IntArray = npt.NDArray[np.int64]


@attrs.define(eq=False)
class Inode:
    """A file or shmem object: its size, its disk bytes and its page cache (index -> pfn)."""

    ident: int
    size: int
    shmem: bool
    disk: bytes = b""
    cache: dict[int, int] = attrs.Factory(dict)

    @property
    def nr_pages(self) -> int:
        """Pages below EOF (the last may be partial)."""
        return -(-self.size // PAGE_SIZE)


class PageFrames:
    """Metadata and contents of every user page, by pfn."""

    member: npt.NDArray[np.int8]
    refcount: npt.NDArray[np.int32]
    mapcount: npt.NDArray[np.int32]
    index: npt.NDArray[np.int64]
    inode: npt.NDArray[np.int64]
    cached: npt.NDArray[np.bool_]

    def __init__(self, nr_pages: int) -> None:
        self._size = 0
        self.data: dict[int, bytearray] = {}
        self._grow(max(nr_pages, 1))

    def _grow(self, size: int) -> None:
        """(Re)allocate the arrays, keeping what they hold; a page allocator plug-in could
        hand out a pfn past nr_pages, and the kernel must not crash on it."""
        old = self._size
        member = np.full(size, NO_PAGE, dtype=np.int8)
        refcount = np.zeros(size, dtype=np.int32)
        mapcount = np.zeros(size, dtype=np.int32)
        index = np.zeros(size, dtype=np.int64)
        inode = np.zeros(size, dtype=np.int64)
        cached = np.zeros(size, dtype=np.bool_)
        if old:
            member[:old] = self.member
            refcount[:old] = self.refcount
            mapcount[:old] = self.mapcount
            index[:old] = self.index
            inode[:old] = self.inode
            cached[:old] = self.cached
        self.member, self.refcount, self.mapcount = member, refcount, mapcount
        self.index, self.inode, self.cached = index, inode, cached
        # memoryviews: scalar reads give Python ints, about twice as fast as numpy indexing
        self.m_member: memoryview = member.data
        self.m_ref: memoryview = refcount.data
        self.m_map: memoryview = mapcount.data
        self.m_index: memoryview = index.data
        self.m_inode: memoryview = inode.data
        self.m_cached: memoryview = cached.data
        self._size = size

    # -- one page ---------------------------------------------------------------------------------

    def is_user(self, pfn: int) -> bool:
        """True when pfn holds a user page."""
        return 0 <= pfn < self._size and self.m_member[pfn] != NO_PAGE

    def add(self, pfn: int, member: int) -> None:
        """A freshly allocated page: the allocation's reference, nothing mapped."""
        if pfn >= self._size:
            self._grow(max(2 * self._size, pfn + 1))
        self.m_member[pfn] = member
        self.m_ref[pfn] = 1
        self.m_map[pfn] = 0
        self.m_index[pfn] = 0
        self.m_inode[pfn] = 0
        self.m_cached[pfn] = False

    def forget(self, pfn: int) -> None:
        """The last reference went: the pfn holds no user page any more."""
        self.m_member[pfn] = NO_PAGE
        self.data.pop(pfn, None)

    def read(self, pfn: int, offset: int, n: int) -> bytes:
        buf = self.data.get(pfn)
        return bytes(n) if buf is None else bytes(buf[offset:offset + n])

    def write(self, pfn: int, offset: int, data: bytes) -> None:
        buf = self.data.get(pfn)
        if buf is None:
            buf = self.data[pfn] = bytearray(PAGE_SIZE)
        buf[offset:offset + len(data)] = data

    def copy(self, dst: int, src: int) -> None:
        """copy_user_highpage: dst gets src's bytes (nothing to store when src is zeros)."""
        buf = self.data.get(src)
        if buf is not None:
            self.data[dst] = bytearray(buf)

    # -- many pages -------------------------------------------------------------------------------

    def user_mask(self, pfns: IntArray) -> npt.NDArray[np.bool_]:
        """Which of pfns hold user pages (pfns outside the arrays do not)."""
        inside = (pfns >= 0) & (pfns < self._size)
        out = np.zeros(pfns.shape, dtype=np.bool_)
        out[inside] = self.member[pfns[inside]] != NO_PAGE
        return out

    def rss_counts(self, pfns: IntArray) -> IntArray:
        """How many of pfns (user pages, repeats counted) each RSS counter charges."""
        counts: IntArray = np.bincount(self.member[pfns].astype(np.int64),
                                       minlength=len(RssMember))
        return counts

    def view(self) -> tuple[PageView, ...]:
        """Every user page, ascending pfn."""
        pfns = np.flatnonzero(self.member != NO_PAGE)
        if not pfns.size:
            return ()
        rows = zip(pfns.tolist(), self.member[pfns].tolist(), self.refcount[pfns].tolist(),
                   self.mapcount[pfns].tolist(), self.index[pfns].tolist(),
                   self.inode[pfns].tolist(), self.cached[pfns].tolist(), strict=True)
        return tuple(PageView(pfn=pfn, kind=KIND_OF[member], refcount=ref, mapcount=mapped,
                              index=index, inode=inode or None, cached=cached)
                     for pfn, member, ref, mapped, index, inode, cached in rows)
