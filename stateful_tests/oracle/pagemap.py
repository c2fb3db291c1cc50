"""What the host kernel's page tables say, read through ``/proc/<pid>/pagemap`` (issue 5).

The fault oracle compares fixed fault/fork/COW scenarios with the reference kernel.  The
host side runs in a forked child (:func:`run_in_child`): the scenario maps memory at fixed
addresses in a high window, touches it, forks a :class:`Peer` when it needs a second mm, and
reads both mms' pagemap entries.  A scenario that crashes or hangs the child is reported in
the :class:`ChildResult`, never raised, exactly like the address-space executor in ``host``.

Only root sees pfns (the kernel zeroes them for callers without CAP_SYS_ADMIN since 4.2), so
:func:`pfns_visible` lets callers skip instead of comparing zeros.  Only the standard library
is used.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import os
import select
import signal
import struct
import time
import traceback
from collections.abc import Callable
from typing import Any, Final

import attrs

PAGE_SIZE: Final = 4096
#: 48 TiB: above the interpreter's mappings, apart from the address-space oracle's window
WINDOW_BASE: Final = 0x3000_0000_0000

MAP_SHARED: Final = 0x01
MAP_PRIVATE: Final = 0x02
MAP_FIXED: Final = 0x10
MAP_ANONYMOUS: Final = 0x20
MAP_FIXED_NOREPLACE: Final = 0x10_0000
PROT_READ: Final = 1
PROT_WRITE: Final = 2
MADV_DONTNEED: Final = 4
MADV_DONTFORK: Final = 10
MADV_NOHUGEPAGE: Final = 15

#: pagemap bits [Documentation/admin-guide/mm/pagemap.rst]
_PM_PRESENT: Final = 1 << 63
_PM_SWAP: Final = 1 << 62
_PM_FILE: Final = 1 << 61
_PM_EXCLUSIVE: Final = 1 << 56
_PM_PFN_MASK: Final = (1 << 55) - 1
_ULONG: Final = (1 << 64) - 1
_MAP_FAILED: Final = _ULONG

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.restype = ctypes.c_int
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


@attrs.frozen
class PagemapEntry:
    """One page's pagemap word, decoded.  ``pfn`` is None when the page is not present."""

    present: bool
    swapped: bool
    #: bit 61: a page-cache page or shared anonymous (shmem) memory
    file_or_shared: bool
    #: bit 56: the page is mapped by exactly one PTE (never set for the zero page)
    exclusive: bool
    pfn: int | None

    @classmethod
    def decode(cls, word: int) -> PagemapEntry:
        present = bool(word & _PM_PRESENT)
        return cls(present=present, swapped=bool(word & _PM_SWAP),
                   file_or_shared=bool(word & _PM_FILE), exclusive=bool(word & _PM_EXCLUSIVE),
                   pfn=word & _PM_PFN_MASK if present else None)


def read_pagemap(addr: int, pages: int, pid: int | str = "self") -> tuple[PagemapEntry, ...]:
    """The entries of ``pages`` pages from ``addr`` in ``pid``'s mm (8-byte aligned pread,
    the only kind pagemap accepts)."""
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        raw = os.pread(fd, 8 * pages, (addr // PAGE_SIZE) * 8)
    finally:
        os.close(fd)
    return tuple(PagemapEntry.decode(word) for word in struct.unpack(f"<{pages}Q", raw))


def kpagecount(pfn: int) -> int | None:
    """How many times the page is mapped (``/proc/kpagecount``), None if unreadable."""
    try:
        fd = os.open("/proc/kpagecount", os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = os.pread(fd, 8, pfn * 8)
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(struct.unpack("<Q", raw)[0]) if len(raw) == 8 else None


def pfns_visible() -> bool:
    """Whether this process sees pfns: the zero page mapped by a read fault has pfn 0 in
    pagemap for an unprivileged reader."""
    result = run_in_child(_probe_zero_pfn, timeout=5.0)
    return result.status == "ok" and bool(result.value)


def _probe_zero_pfn() -> int:
    addr = map_anon(WINDOW_BASE, 1, shared=False)
    peek(addr, 1)
    entry = read_pagemap(addr, 1)[0]
    unmap(addr, 1)
    return entry.pfn or 0


# -- memory in the scenario child -------------------------------------------------------------


def map_anon(addr: int, pages: int, shared: bool, nohuge: bool = True) -> int:
    """An anonymous RW mapping of ``pages`` pages at exactly ``addr``.  ``MADV_NOHUGEPAGE``
    keeps THP, mTHP and the huge zero page out of the picture (4.6 has no mTHP at all)."""
    flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
    raw = _libc.mmap(addr, pages * PAGE_SIZE, PROT_READ | PROT_WRITE, flags, -1, 0)
    if raw is None or raw == _MAP_FAILED or raw != addr:
        raise OSError(ctypes.get_errno(), f"mmap at {addr:#x} gave {raw!r}")
    if nohuge:
        madvise(addr, pages, MADV_NOHUGEPAGE)
    return addr


def unmap(addr: int, pages: int) -> None:
    """munmap; failure means the scenario is broken, so it raises (inside the child)."""
    if _libc.munmap(addr, pages * PAGE_SIZE) != 0:
        raise OSError(ctypes.get_errno(), f"munmap {addr:#x}")


def madvise(addr: int, pages: int, advice: int) -> None:
    """madvise; raises on failure (inside the child)."""
    if _libc.madvise(addr, pages * PAGE_SIZE, advice) != 0:
        raise OSError(ctypes.get_errno(), f"madvise {advice} at {addr:#x}")


def peek(addr: int, n: int) -> bytes:
    """User loads (read faults as needed); a bad address kills the child, which is reported."""
    return ctypes.string_at(addr, n)


def poke(addr: int, data: bytes) -> None:
    """User stores (write faults as needed)."""
    ctypes.memmove(addr, data, len(data))


def own_maps(start: int, end: int) -> list[tuple[int, int, str]]:
    """(start, end, perms) of this process's VMAs inside [start, end)."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo < end and hi > start:
                out.append((lo, hi, perms))
    return out


# -- a second mm --------------------------------------------------------------------------------


def _send(fd: int, record: Any) -> None:
    data = (json.dumps(record) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def _receive(fd: int, deadline: float) -> Any:
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("no answer from the other process")
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError("the other process died")
        line += chunk
    return json.loads(line)


class Peer:
    """A forked child of the scenario process that obeys peek/poke/maps commands, so the
    scenario can make the other side of a COW pair fault and look at its pagemap."""

    def __init__(self) -> None:
        to_read, self._to = os.pipe()
        self._from, from_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the peer only
            os.close(self._to)
            os.close(self._from)
            code = 0
            try:
                while True:
                    command = _receive(to_read, time.monotonic() + 30.0)
                    if command[0] == "exit":
                        break
                    _send(from_write, self._serve(command))
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(to_read)
        os.close(from_write)

    @staticmethod
    def _serve(command: list[Any]) -> Any:  # pragma: no cover - runs in the peer only
        if command[0] == "peek":
            return peek(command[1], command[2]).hex()
        if command[0] == "poke":
            poke(command[1], bytes.fromhex(command[2]))
            return None
        if command[0] == "maps":
            return own_maps(command[1], command[2])
        raise ValueError(command)

    def _ask(self, *command: Any) -> Any:
        _send(self._to, list(command))
        return _receive(self._from, time.monotonic() + 5.0)

    def peek(self, addr: int, n: int) -> bytes:
        """The peer reads its own memory."""
        return bytes.fromhex(self._ask("peek", addr, n))

    def poke(self, addr: int, data: bytes) -> None:
        """The peer writes its own memory (a COW break on its side)."""
        self._ask("poke", addr, data.hex())

    def maps(self, start: int, end: int) -> list[tuple[int, int, str]]:
        """The peer's VMAs in [start, end)."""
        return [(int(lo), int(hi), str(perms)) for lo, hi, perms in self._ask("maps", start, end)]

    def pagemap(self, addr: int, pages: int) -> tuple[PagemapEntry, ...]:
        """The peer's pagemap entries, read from here."""
        return read_pagemap(addr, pages, self.pid)

    def close(self) -> None:
        """Let the peer exit and reap it."""
        with contextlib.suppress(OSError):
            _send(self._to, ["exit"])
        with contextlib.suppress(OSError):
            os.close(self._to)
        with contextlib.suppress(OSError):
            os.close(self._from)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


# -- running a scenario ---------------------------------------------------------------------------


@attrs.frozen
class ChildResult:
    """``status`` is ``"ok"`` (``value`` is what the scenario returned, through JSON),
    ``"error"`` (it raised; ``message`` has the traceback), ``"crashed"`` (a signal) or
    ``"timeout"``."""

    status: str
    value: Any = None
    message: str = ""


def run_in_child(scenario: Callable[[], Any], timeout: float = 5.0) -> ChildResult:
    """Run ``scenario`` in a forked child and return its JSON-able result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child only
        os.close(read_end)
        faulthandler.disable()  # a crash is the result here, not a traceback on stderr
        code = 0
        try:
            record: dict[str, Any] = {"value": scenario()}
        except BaseException:
            code, record = 1, {"error": traceback.format_exc()}
        with contextlib.suppress(BaseException):
            _send(write_end, record)
        os._exit(code)
    os.close(write_end)
    try:
        try:
            record = _receive(read_end, time.monotonic() + timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return ChildResult("timeout", message=f"no result after {timeout} s")
        except EOFError:
            _, status = os.waitpid(pid, 0)
            name = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else ""
            return ChildResult("crashed", message=f"child died {name or hex(status)}")
    finally:
        os.close(read_end)
    os.waitpid(pid, 0)
    if "error" in record:
        return ChildResult("error", message=str(record["error"]))
    return ChildResult("ok", value=record["value"])
