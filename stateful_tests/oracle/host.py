"""Run a system-call sequence on the host kernel, in a forked child, inside a fixed window.

The child reserves the window with ``MAP_FIXED_NOREPLACE`` (so a collision with the
interpreter's own mappings is reported instead of clobbering them), unmaps it again so it is
known to be empty, opens the sequence's files, and then performs each call, writing one JSON
line per call to a pipe: the raw result (an address, 0, or a negative errno) and the window's
lines of ``/proc/self/maps``.  The parent collects the lines, kills the child if it overruns
its deadline, and reports a crash (a signal) with the calls done so far, never raising.

Only the standard library is used (ctypes, os.fork, a pipe), so the executor runs wherever
the tests run.  Everything the generator may hand us stays inside the window or is refused by
the kernel before it acts (see ``generate``): a stray ``MAP_FIXED`` outside it would overwrite
the interpreter of the child, which is why the work happens in a child at all.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Final

import attrs

PAGE_SIZE: Final = 4096
#: 32 TiB: far above the executable, the heap and the mmap area of a 64-bit Python process
WINDOW_BASE: Final = 0x2000_0000_0000
#: 1 GiB: the generator stays well inside it, so every mapping ends before the window does
WINDOW_SIZE: Final = 1 << 30
#: An fd number that is never open in the child (EBADF for a file map, ignored for anon)
BAD_FD: Final = 9999

_MAP_PRIVATE: Final = 0x02
_MAP_ANONYMOUS: Final = 0x20
_MAP_NORESERVE: Final = 0x4000
_MAP_FIXED_NOREPLACE: Final = 0x10_0000
_SYS_PROCESS_VM_READV: Final = 310
_SYS_PROCESS_VM_WRITEV: Final = 311
_ULONG: Final = (1 << 64) - 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.restype = ctypes.c_int
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mremap.restype = ctypes.c_void_p
_libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                         ctypes.c_void_p]
_libc.syscall.restype = ctypes.c_long
_MAP_FAILED: Final = _ULONG


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


@attrs.frozen
class HostFile:
    """A regular file the sequence maps: its size in bytes and open mode (O_RDONLY/O_WRONLY/
    O_RDWR).  Files are referred to by their index in ``HostProgram.files``."""

    size: int
    mode: int


@attrs.frozen
class HostProgram:
    """What the child runs.  Each call is a tuple:

    * ``("mmap", addr, length, prot, flags, fd_slot, offset)``: ``fd_slot`` is -1 (no file),
      the index of a file, or ``BAD_FD`` (a descriptor that is not open);
    * ``("munmap", addr, length)``, ``("mprotect", addr, length, prot)``;
    * ``("mremap", old_addr, old_len, new_len, flags, new_addr)``;
    * ``("touch", addr, write)``: a one-byte access through ``process_vm_readv/writev`` on
      the child itself, so it faults like a user access but a bad address gives -EFAULT
      instead of killing the child.
    """

    calls: tuple[tuple[Any, ...], ...]
    files: tuple[HostFile, ...] = ()
    window_base: int = WINDOW_BASE
    window_size: int = WINDOW_SIZE


@attrs.frozen
class MapsLine:
    """One line of ``/proc/self/maps`` inside the window.  ``file`` is the index of one of
    the program's files, ``"shm:<inode>"`` for a shared anonymous (shmem) object, or None."""

    start: int
    end: int
    perms: str
    offset: int
    file: int | str | None


@attrs.frozen
class HostRun:
    """What came back: per call its raw result and the window's maps after it.

    ``status`` is ``"ok"``, ``"setup"`` (the window or the files could not be prepared),
    ``"crashed"`` (the child died of a signal; ``results`` stops at the last completed call)
    or ``"timeout"``.  ``initial`` is the window's maps before the first call (empty)."""

    status: str
    results: tuple[int, ...]
    maps: tuple[tuple[MapsLine, ...], ...]
    initial: tuple[MapsLine, ...] = ()
    message: str = ""


def _errno_result(ok: bool, value: int) -> int:
    return value if ok else -ctypes.get_errno()


def _call(call: Sequence[Any], fds: Sequence[int]) -> int:
    """Perform one call in the child; the raw result as the syscall returns it."""
    name = call[0]
    ctypes.set_errno(0)
    if name == "mmap":
        _, addr, length, prot, flags, slot, offset = call
        fd = slot if slot in (-1, BAD_FD) else fds[slot]
        raw = _libc.mmap(addr & _ULONG, length & _ULONG, prot, flags, fd, offset)
        raw = 0 if raw is None else raw
        return _errno_result(raw != _MAP_FAILED, raw)
    if name == "munmap":
        _, addr, length = call
        return _errno_result(_libc.munmap(addr & _ULONG, length & _ULONG) == 0, 0)
    if name == "mprotect":
        _, addr, length, prot = call
        return _errno_result(_libc.mprotect(addr & _ULONG, length & _ULONG, prot) == 0, 0)
    if name == "mremap":
        _, old, old_len, new_len, flags, new_addr = call
        raw = _libc.mremap(old & _ULONG, old_len & _ULONG, new_len & _ULONG, flags,
                           new_addr & _ULONG)
        raw = 0 if raw is None else raw
        return _errno_result(raw != _MAP_FAILED, raw)
    if name == "touch":
        _, addr, write = call
        buf = ctypes.create_string_buffer(1)
        local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), 1)
        remote = _IoVec(addr & _ULONG, 1)
        number = _SYS_PROCESS_VM_WRITEV if write else _SYS_PROCESS_VM_READV
        done = _libc.syscall(ctypes.c_long(number), ctypes.c_long(os.getpid()),
                             ctypes.byref(local), ctypes.c_ulong(1), ctypes.byref(remote),
                             ctypes.c_ulong(1), ctypes.c_ulong(0))
        return _errno_result(done == 1, 0)
    raise ValueError(f"unknown call {name!r}")


class _MapsReader:
    """The window's lines of /proc/self/maps, read with one pread on a kept descriptor."""

    def __init__(self, base: int, size: int, inodes: dict[int, int]) -> None:
        self.fd = os.open("/proc/self/maps", os.O_RDONLY)
        self.base, self.end, self.inodes = base, base + size, inodes

    def read(self) -> list[list[Any]]:
        """Lines are in address order, so reading stops at the first line past the window:
        the kernel then formats only the VMAs up to there (a few, not the whole process)."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        out: list[list[Any]] = []
        pending = b""
        while True:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                lines, pending = (pending.split(b"\n") if pending else []), b""
            else:
                *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if not line:
                    continue
                dash = line.find(b"-")
                start = int(line[:dash], 16)
                if start >= self.end:
                    return out
                fields = line.split(maxsplit=5)
                end = int(fields[0][dash + 1:], 16)
                if end <= self.base:
                    continue
                inode = int(fields[4])
                path = fields[5].decode(errors="replace") if len(fields) > 5 else ""
                ident: int | str | None = None
                if inode:
                    ident = self.inodes.get(inode, f"shm:{inode}" if path.startswith("/dev/zero")
                                            else f"file:{inode}")
                out.append([start, end, fields[1].decode(), int(fields[2], 16), ident])
            if not chunk:
                return out


def _open_files(files: Sequence[HostFile], directory: str) -> tuple[list[int], dict[int, int]]:
    fds, inodes = [], {}
    for index, spec in enumerate(files):
        path = os.path.join(directory, f"f{index}")
        with open(path, "wb") as f:
            f.truncate(spec.size)
        fd = os.open(path, spec.mode)
        os.unlink(path)
        fds.append(fd)
        inodes[os.fstat(fd).st_ino] = index
    return fds, inodes


def _emit(out: int, record: dict[str, Any]) -> None:
    data = (json.dumps(record) + "\n").encode()
    while data:
        data = data[os.write(out, data):]


def _run_program(program: dict[str, Any], out: int, directory: str) -> None:
    """Run one program in the driver child and leave the window empty again."""
    base, size = program["base"], program["size"]
    files = [HostFile(*spec) for spec in program["files"]]
    fds, inodes = _open_files(files, directory)
    outside: list[tuple[int, int]] = []
    try:
        maps = _MapsReader(base, size, inodes)
        try:
            _emit(out, {"initial": maps.read()})
            for call in program["calls"]:
                result = _call(call, fds)
                if call[0] in ("mmap", "mremap") and result > 0 \
                        and not base <= result < base + size:
                    outside.append((result, call[2] if call[0] == "mmap" else call[3]))
                _emit(out, {"result": result, "maps": maps.read()})
        finally:
            os.close(maps.fd)
    finally:
        for fd in fds:
            os.close(fd)
        for addr, length in outside:  # placements the kernel chose outside the window
            _libc.munmap(addr, length)
        _libc.munmap(base, size)
    _emit(out, {"done": True})


def _driver(commands: int, out: int, base: int, size: int) -> None:
    """The driver child: check the window once, then run programs until the pipe closes."""
    reserved = _libc.mmap(base, size, 0, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE
                          | _MAP_FIXED_NOREPLACE, -1, 0)
    if reserved != base:
        _emit(out, {"setup": f"window {base:#x}+{size:#x} is not free "
                             f"(mmap gave {reserved!r}, errno {ctypes.get_errno()})"})
        return
    _libc.munmap(base, size)
    _emit(out, {"ready": True})
    with tempfile.TemporaryDirectory(prefix="vmconform-oracle-") as directory, \
            os.fdopen(commands, "rb") as source:
        for line in source:
            _run_program(json.loads(line), out, directory)


def _decode(line: list[Any]) -> MapsLine:
    start, end, perms, offset, ident = line
    return MapsLine(start, end, perms, offset, ident)


class HostDriver:
    """A long-lived child that runs programs one after another.

    Forking costs about 10 ms for a test process with a few hundred mappings; resetting the
    window with one munmap costs microseconds, so programs share one child.  A program that
    crashes or overruns the child is reported in its HostRun, and the next program gets a new
    child.
    """

    def __init__(self, base: int = WINDOW_BASE, size: int = WINDOW_SIZE) -> None:
        self.base, self.size = base, size
        self.pid = 0
        self.owner = 0
        self.to_child = self.from_child = -1
        self.pending = b""

    def _start(self) -> str:
        commands_read, commands_write = os.pipe()
        results_read, results_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child only
            code = 0
            try:
                os.close(commands_write)
                os.close(results_read)
                _driver(commands_read, results_write, self.base, self.size)
            except BaseException as exc:
                code = 1
                with contextlib.suppress(BaseException):
                    _emit(results_write, {"setup": f"driver raised {exc!r}"})
            finally:
                os._exit(code)
        os.close(commands_read)
        os.close(results_write)
        self.pid, self.owner = pid, os.getpid()
        self.to_child, self.from_child, self.pending = commands_write, results_read, b""
        record = self._record(time.monotonic() + 30.0)
        if record is None or "ready" not in record:
            message = (record or {}).get("setup", "driver did not start")
            self.stop()
            return str(message)
        return ""

    def stop(self) -> None:
        """Kill and reap the child (idempotent)."""
        if self.pid and self.owner == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self.to_child)
            with contextlib.suppress(OSError):
                os.close(self.from_child)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        self.pid = 0

    def _record(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON line from the child; None on EOF or at the deadline."""
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.from_child], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.from_child, 1 << 16)
            if not chunk:
                return None
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        record: dict[str, Any] = json.loads(line)
        return record

    def _death(self) -> str:
        """Why the child stopped answering; reaps it."""
        pid = self.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        self.pid = 0
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
            return f"child killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return f"child exited (status {status:#x})"

    def run(self, program: HostProgram, timeout: float = 10.0) -> HostRun:
        """Run one program; a crash or overrun is reported in the result, never raised."""
        if program.window_base != self.base or program.window_size != self.size:
            raise ValueError("the driver serves one window")
        if not self.pid or self.owner != os.getpid():
            problem = self._start()
            if problem:
                return HostRun(status="setup", results=(), maps=(), message=problem)
        command = {"base": self.base, "size": self.size, "calls": list(program.calls),
                   "files": [[f.size, f.mode] for f in program.files]}
        deadline = time.monotonic() + timeout
        results: list[int] = []
        maps: list[tuple[MapsLine, ...]] = []
        initial: tuple[MapsLine, ...] = ()
        try:
            os.write(self.to_child, (json.dumps(command) + "\n").encode())
        except BrokenPipeError:
            return HostRun(status="crashed", results=(), maps=(), message=self._death())
        while True:
            record = self._record(deadline)
            if record is None:
                timed_out = time.monotonic() >= deadline
                message = self._death()
                return HostRun(status="timeout" if timed_out else "crashed",
                               results=tuple(results), maps=tuple(maps), initial=initial,
                               message=f"after {len(results)} calls: {message}")
            if "done" in record:
                return HostRun(status="ok", results=tuple(results), maps=tuple(maps),
                               initial=initial)
            if "setup" in record:
                self._death()
                return HostRun(status="setup", results=tuple(results), maps=tuple(maps),
                               initial=initial, message=str(record["setup"]))
            if "initial" in record:
                initial = tuple(_decode(line) for line in record["initial"])
            else:
                results.append(record["result"])
                maps.append(tuple(_decode(line) for line in record["maps"]))


_DRIVER: list[HostDriver] = []


def _stop_driver() -> None:
    for driver in _DRIVER:
        driver.stop()


def run_on_host(program: HostProgram, timeout: float = 10.0) -> HostRun:
    """Run ``program`` on this process's shared driver child (started on first use)."""
    if not _DRIVER:
        _DRIVER.append(HostDriver(program.window_base, program.window_size))
        atexit.register(_stop_driver)
    driver = _DRIVER[0]
    if (driver.base, driver.size) != (program.window_base, program.window_size):
        return HostDriver(program.window_base, program.window_size).run(program, timeout)
    return driver.run(program, timeout)


def errno_name(result: int) -> str:
    """``-EINVAL`` for a negative result, the number otherwise (for reports)."""
    if result < 0:
        return "-" + errno.errorcode.get(-result, str(-result))
    return hex(result) if result > 0xFFFF else str(result)
