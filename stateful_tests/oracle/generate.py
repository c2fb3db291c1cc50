"""Hypothesis strategies for system-call sequences the host kernel answers as 4.6 would.

Everything drawn here is restricted *statically* (before any state exists) to behaviour that
has not changed since 4.6; the restrictions that depend on the address space at the time of a
call (an mremap that would now merge with its neighbour, a touch that would grow a stack) are
applied while the sequence runs on the model, in ``compare``.  Each restriction carries a key
from the table in ``specs/vma_oracle.md``, which cites the kernel change behind it:

* ``noreplace``: no ``MAP_FIXED_NOREPLACE`` (0x100000): 4.6 ignores the bit, 4.17+ honours it;
* ``map-types``: map types are SHARED, PRIVATE or an invalid type other than 3 and 8
  (``MAP_SHARED_VALIDATE``, 4.15; ``MAP_DROPPABLE``, 6.11);
* ``new-flags``: unknown flag bits are drawn only from bits neither kernel defines, and no
  ``MAP_STACK`` (6.7 maps it to VM_NOHUGEPAGE, which changes merging), ``MAP_SYNC``,
  ``MAP_HUGETLB``, ``MAP_LOCKED``/``MAP_POPULATE`` (they fault pages in, which creates
  anon_vmas behind the model's back), and ``MAP_32BIT`` only together with ``MAP_FIXED``;
* ``thp-align``: every length stays below 2 MiB, so 6.7's THP alignment of large anonymous
  mappings never moves a placement;
* ``mremap-flags``: no ``MREMAP_DONTUNMAP`` (5.7), and ``old_len`` is never 0 (a private
  duplicate is refused since 4.14); ``mremap-huge``: no ``new_len`` above TASK_SIZE;
* ``offset-limit``: no offset at or past 2**63 (negative as an ``off_t``), which the host
  refuses with EOVERFLOW (4.6 maps it);
* ``window``: every address the host acts on lies inside the window, or the call is one both
  kernels refuse before acting (a length of 2**47 or more, an address past TASK_SIZE), so a
  generated call can never clobber the child's own interpreter.

Addresses are absolute; lengths are mostly whole pages, with unaligned and zero lengths and
refused huge ones mixed in, as the issue's bad-input list asks.
"""

from __future__ import annotations

from typing import Any, Final

import attrs
from hypothesis import strategies as st

from stateful_tests.oracle.host import BAD_FD, PAGE_SIZE, WINDOW_BASE, HostFile

#: The part of the window calls aim at, in pages: small, so calls collide often
SPAN_PAGES: Final = 96
#: The longest mapping drawn, in pages (below 2 MiB: ``thp-align``)
MAX_LEN_PAGES: Final = 24
#: Mappings never reach past this page of the window (the rest is a guaranteed hole)
LIMIT_PAGES: Final = SPAN_PAGES + 2 * MAX_LEN_PAGES + 8
TASK_SIZE: Final = (1 << 47) - PAGE_SIZE
#: Lengths every call refuses before it looks at an address (len > TASK_SIZE, or an
#: unsigned long that PAGE_ALIGN wraps to 0)
HUGE_LENGTHS: Final = (1 << 47, (1 << 64) - 1, (1 << 64) - PAGE_SIZE + 1)
#: Flag bits that neither 4.6 nor the host defines for mmap: both ignore them (``new-flags``)
UNKNOWN_MAP_BITS: Final = (0x200, 0x400, 0x20_0000, 0x40_0000, 0x80_0000, 0x800_0000)

PROT_READ, PROT_WRITE, PROT_EXEC, PROT_SEM = 0x1, 0x2, 0x4, 0x8
PROT_GROWSDOWN: Final = 0x0100_0000
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_32BIT, MAP_GROWSDOWN, MAP_NORESERVE = 0x40, 0x100, 0x4000
#: Invalid map types both kernels refuse with EINVAL (3 and 8 are valid on the host)
BAD_MAP_TYPES: Final = (0x0, 0x4, 0x7, 0xC, 0xF)
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2

O_RDONLY, O_WRONLY, O_RDWR = 0, 1, 2


@attrs.frozen
class Program:
    """One generated example: the files to open (in order) and the calls (``host``'s tuple
    format; an mmap's fd slot indexes ``files``)."""

    files: tuple[HostFile, ...]
    calls: tuple[tuple[Any, ...], ...]


def page_addr(page: int) -> int:
    """The address of a page of the window."""
    return WINDOW_BASE + page * PAGE_SIZE


@st.composite
def addresses(draw: st.DrawFn, span: int = SPAN_PAGES, anchors: tuple[int, ...] = ()) -> int:
    """A page of the span, sometimes a byte inside it (unaligned).  Half the time the page
    is near an *anchor* (a start or end of an earlier call's range), so calls land on the
    mappings and edges earlier calls made instead of in empty space."""
    near: bool = draw(st.integers(0, 2)) > 0
    if anchors and near:
        anchor: int = draw(st.sampled_from(list(anchors)))
        page = anchor + draw(st.integers(-2, 2))
        page = min(max(page, 0), span - 1)
    else:
        page = draw(st.integers(0, span - 1))
    addr = page_addr(page)
    if draw(st.integers(0, 15)) == 0:
        addr += draw(st.sampled_from((1, 8, PAGE_SIZE // 2, PAGE_SIZE - 1)))
    return addr


@st.composite
def lengths(draw: st.DrawFn, huge: bool = True) -> int:
    """Mostly whole pages; sometimes a partial page, zero, or (when allowed) a length every
    call refuses before acting."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return 0
    if kind == 1 and huge:
        return draw(st.sampled_from(HUGE_LENGTHS))
    pages = draw(st.integers(1, MAX_LEN_PAGES))
    if kind == 2:
        return pages * PAGE_SIZE - draw(st.sampled_from((1, PAGE_SIZE // 2, PAGE_SIZE - 1)))
    return pages * PAGE_SIZE


prots = st.one_of(
    st.sampled_from((PROT_READ | PROT_WRITE, PROT_READ, PROT_READ | PROT_WRITE,
                     PROT_READ | PROT_EXEC, 0, PROT_WRITE, PROT_EXEC,
                     PROT_READ | PROT_WRITE | PROT_EXEC)),
    st.sampled_from((PROT_READ | PROT_SEM, PROT_READ | PROT_GROWSDOWN, 0x10)),
)


@st.composite
def mmap_calls(draw: st.DrawFn, nfiles: int, anchors: tuple[int, ...] = ()) -> tuple[Any, ...]:
    """An mmap: fixed, hinted or unhinted; anonymous or of one of the files."""
    placement = draw(st.sampled_from(("fixed",) * 5 + ("hint", "hint", "none", "far")))
    addr = draw(addresses(anchors=anchors))
    length = draw(lengths())
    flags = 0
    if placement == "fixed":
        flags |= MAP_FIXED
    elif placement == "none":
        addr = 0
    elif placement == "far":
        # past TASK_SIZE: refused with MAP_FIXED, ignored as a hint
        addr = TASK_SIZE + draw(st.sampled_from((PAGE_SIZE, 1 << 40)))
        flags |= draw(st.sampled_from((0, MAP_FIXED)))
    if flags & MAP_FIXED and addr < TASK_SIZE and length not in HUGE_LENGTHS:
        # ``window``: a fixed mapping must end inside the window
        assert addr + length <= page_addr(LIMIT_PAGES)
    kind = draw(st.integers(0, 31))
    if kind == 0:
        flags |= draw(st.sampled_from(BAD_MAP_TYPES))
    else:
        flags |= MAP_PRIVATE if kind % 3 else MAP_SHARED
    slot = -1
    if nfiles and draw(st.integers(0, 2)) == 0:
        slot = draw(st.integers(0, nfiles - 1))
    else:
        flags |= MAP_ANONYMOUS
    extra = draw(st.integers(0, 23))
    if extra == 0:
        flags |= MAP_NORESERVE
    elif extra == 1:
        flags |= MAP_GROWSDOWN
    elif extra == 2:
        flags |= draw(st.sampled_from(UNKNOWN_MAP_BITS))
    elif extra == 3 and flags & MAP_FIXED:
        flags |= MAP_32BIT
    if draw(st.integers(0, 23)) == 0:
        slot = draw(st.sampled_from((BAD_FD, -1)))
    offset = 0
    okind = draw(st.integers(0, 11))
    if slot >= 0 and okind < 6:
        offset = draw(st.integers(0, 12)) * PAGE_SIZE
    elif okind == 6:
        offset = draw(st.sampled_from((1, PAGE_SIZE // 2)))
    elif okind == 7:
        # ``offset-limit``: far past the file, but below MAX_LFS_FILESIZE (no negative
        # offsets, which the host refuses and 4.6 maps)
        offset = 1 << 40
    return ("mmap", addr, length, draw(prots), flags, slot, offset)


@st.composite
def munmap_calls(draw: st.DrawFn, anchors: tuple[int, ...] = ()) -> tuple[Any, ...]:
    """A munmap inside the span, or one refused before it acts."""
    if draw(st.integers(0, 29)) == 0:
        return ("munmap", TASK_SIZE + PAGE_SIZE, PAGE_SIZE)
    return ("munmap", draw(addresses(anchors=anchors)), draw(lengths()))


@st.composite
def mprotect_calls(draw: st.DrawFn, anchors: tuple[int, ...] = ()) -> tuple[Any, ...]:
    """An mprotect; huge lengths walk to the first hole, which is inside the window."""
    return ("mprotect", draw(addresses(anchors=anchors)), draw(lengths()), draw(prots))


@st.composite
def mremap_calls(draw: st.DrawFn, anchors: tuple[int, ...] = ()) -> tuple[Any, ...]:
    """An mremap: in place, may-move (lands outside the window) or fixed inside the window."""
    old = draw(addresses(anchors=anchors))
    old_len = draw(lengths(huge=False)) or PAGE_SIZE  # ``mremap-flags``: old_len != 0
    # ``mremap-huge``: new_len is 0 (refused) or an ordinary length, never past TASK_SIZE
    new_len = 0 if draw(st.integers(0, 19)) == 0 else draw(lengths(huge=False)) or PAGE_SIZE
    flags = draw(st.sampled_from((0, 0, MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED,
                                  MREMAP_MAYMOVE | MREMAP_FIXED, MREMAP_FIXED, 0x8)))
    new_addr = 0
    if flags & MREMAP_FIXED:
        new_addr = draw(addresses(span=SPAN_PAGES + MAX_LEN_PAGES, anchors=anchors))
    elif draw(st.integers(0, 3)) == 0:
        new_addr = draw(addresses())  # ignored without MREMAP_FIXED
    return ("mremap", old, old_len, new_len, flags, new_addr)


@st.composite
def touch_calls(draw: st.DrawFn, anchors: tuple[int, ...] = ()) -> tuple[Any, ...]:
    """A one-byte user access somewhere in the span (``touch``)."""
    addr = draw(addresses(anchors=anchors)) & ~(PAGE_SIZE - 1)
    addr += draw(st.integers(0, 3)) * 1024
    return ("touch", addr, draw(st.booleans()))


files_strategy = st.lists(
    st.builds(HostFile,
              size=st.integers(1, 16).map(lambda p: p * PAGE_SIZE)
              | st.integers(1, 16 * PAGE_SIZE),
              mode=st.sampled_from((O_RDWR, O_RDWR, O_RDONLY, O_WRONLY))),
    max_size=3,
).map(tuple)


@st.composite
def programs(draw: st.DrawFn, max_calls: int = 30, touch: bool = True,
             files: bool = True) -> Program:
    """A whole example: files, then up to ``max_calls`` calls weighted toward mmap."""
    file_specs: tuple[HostFile, ...] = draw(files_strategy) if files else ()
    kinds = ["mmap"] * 5 + ["munmap"] * 2 + ["mprotect"] * 3 + ["mremap"] * 2
    if touch:
        kinds += ["touch"] * 2
    calls: list[tuple[Any, ...]] = []
    anchors: list[int] = []
    for i in range(draw(st.integers(1, max_calls))):
        # a few mappings first, so that later calls find something to act on
        kind = "mmap" if i < 3 else draw(st.sampled_from(kinds))
        known = tuple(anchors)
        if kind == "mmap":
            call = draw(mmap_calls(len(file_specs), known))
        elif kind == "munmap":
            call = draw(munmap_calls(known))
        elif kind == "mprotect":
            call = draw(mprotect_calls(known))
        elif kind == "mremap":
            call = draw(mremap_calls(known))
        else:
            call = draw(touch_calls(known))
        calls.append(call)
        anchors.extend(_anchor_pages(call))
    return Program(files=file_specs, calls=tuple(calls))


def _anchor_pages(call: tuple[Any, ...]) -> list[int]:
    """The window pages where a call's range starts and ends (for later calls to aim at)."""
    addr = call[5] if call[0] == "mremap" and call[4] & MREMAP_FIXED else call[1]
    length = {"mmap": 2, "munmap": 2, "mprotect": 2, "mremap": 3}.get(call[0])
    page = (addr - WINDOW_BASE) // PAGE_SIZE
    if not 0 <= page < SPAN_PAGES + MAX_LEN_PAGES:
        return []
    out = [page]
    if length is not None and call[length] < 1 << 47:
        out.append(page + -(-call[length] // PAGE_SIZE))
    return out
