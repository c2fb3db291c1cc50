"""madvise through the composed kernels (``specs/fault.md``): MADV_DONTNEED zaps the pages
of private mappings, which then read back as zeros (or the file's bytes), while shared
mappings keep their contents; a MADV_DONTFORK range is not copied by fork; a killed process
gets -EINTR and a space without the capability -ENOSYS.  Both kernels run every case."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastmodel.kernel import FastKernel
from refmodel.kernel import RefKernel
from refmodel.vma import RefAddressSpace
from specs import pte as pt
from specs.errno import Errno
from specs.machine import MachineConfig, preset
from specs.vma import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_LOCKED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Capability,
)

PAGE = pt.PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
KERNELS = pytest.mark.parametrize("make", [RefKernel, FastKernel], ids=["ref", "fast"])


def boot(make: Callable[..., Any], **kw: Any) -> tuple[Any, int]:
    k = make(preset("tiny"), **kw)
    pid = k.spawn()
    assert k.switch(0, pid) == 0
    return k, pid


def present(k: Any, pid: int, addr: int) -> bool:
    return bool(k.lookup(k.tlb_mm(k.procs[pid]), addr) & pt._PAGE_PRESENT)


@KERNELS
def test_dontneed_zeroes_private_and_keeps_shared(make: Callable[..., Any]) -> None:
    k, pid = boot(make)
    private = k.mmap(pid, 0, 2 * PAGE, RW, ANON)
    shared = k.mmap(pid, 0, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS)
    fd = k.open_file(pid, PAGE, data=b"disk")
    cow = k.mmap(pid, 0, PAGE, RW, MAP_PRIVATE, fd)
    for addr in (private, private + PAGE, shared, cow):
        assert k.write(0, addr, b"mine") == 4
    rss = k.view().by_pid[pid].rss
    free = len(k.view().pages)
    for addr in (private, shared, cow):
        assert present(k, pid, addr)
        assert k.madvise(pid, addr, PAGE, MADV_DONTNEED) == 0
        assert not present(k, pid, addr)
    assert k.view().by_pid[pid].rss != rss
    assert len(k.view().pages) == free - 2  # the private anon and the COW copy went back
    assert k.read(0, private, 4) == bytes(4)
    assert k.read(0, private + PAGE, 4) == b"mine"  # outside the range
    assert k.read(0, shared, 4) == b"mine"
    assert k.read(0, cow, 4) == b"disk"


@KERNELS
def test_dontneed_stops_at_a_locked_vma(make: Callable[..., Any]) -> None:
    """Pieces before the refused VMA are zapped, the refused one and the rest are not."""
    k, pid = boot(make)
    first = k.mmap(pid, 0, 3 * PAGE, RW, ANON)
    assert k.mmap(pid, first + PAGE, PAGE, RW, ANON | MAP_LOCKED | 0x10) == first + PAGE
    for n in range(3):
        assert k.write(0, first + n * PAGE, b"x") == 1
    assert k.madvise(pid, first, 3 * PAGE, MADV_DONTNEED) == -Errno.EINVAL
    assert [present(k, pid, first + n * PAGE) for n in range(3)] == [False, True, True]


@KERNELS
def test_fork_leaves_a_dontfork_range_out(make: Callable[..., Any]) -> None:
    """No VMA and no PTE of the range in the child; everything is freed at exit."""
    k, pid = boot(make)
    addr = k.mmap(pid, 0, 3 * PAGE, RW, ANON)
    for n in range(3):
        assert k.write(0, addr + n * PAGE, b"abc") == 3
    assert k.madvise(pid, addr + PAGE, PAGE, MADV_DONTFORK) == 0
    child = k.fork(pid)
    assert child > 0
    view = k.space(child).view()
    covered = [(v.start, v.end) for v in view.vmas if v.end <= addr + 3 * PAGE
               and v.start >= addr]
    assert covered == [(addr, addr + PAGE), (addr + 2 * PAGE, addr + 3 * PAGE)]
    assert [present(k, child, addr + n * PAGE) for n in range(3)] == [True, False, True]
    assert k.madvise(pid, addr, 3 * PAGE, MADV_DOFORK) == 0
    assert len([v for v in k.space(pid).view().vmas if v.start == addr]) == 1
    assert k.exit(child) == 0
    assert k.exit(pid) == 0
    assert k.view().pages == ()


@KERNELS
def test_killed_process_gets_eintr(make: Callable[..., Any]) -> None:
    k, pid = boot(make)
    addr = k.mmap(pid, 0, PAGE, RW, ANON)
    k.procs[pid].oom.sigkill = True
    assert k.madvise(pid, addr, PAGE, MADV_DONTFORK) == -Errno.EINTR
    assert k.madvise(99, addr, PAGE, MADV_DONTFORK) == -Errno.ESRCH


class NoMadvise(RefAddressSpace):
    """A vma part without Capability.MADVISE."""

    def __init__(self, config: MachineConfig, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.capabilities = self.capabilities - {Capability.MADVISE}


@KERNELS
def test_without_the_capability_the_call_is_enosys(make: Callable[..., Any]) -> None:
    k, pid = boot(make, parts={"vma": NoMadvise})
    addr = k.mmap(pid, 0, PAGE, RW, ANON)
    assert k.madvise(pid, addr, PAGE, MADV_DONTNEED) == -Errno.ENOSYS
