"""One machine-wide vm_committed_as: address spaces sharing a ``VmCommit`` (``specs/vma.md``,
"Shared commit") and the composed kernel that hands one to every process (``specs/oom.md``,
"Overcommit in the composed kernel").

Hand-computed on the tiny preset (4096 pages): under OVERCOMMIT_NEVER with ratio 50 the
limit is 2048 pages, less the admin reserve (512 KiB: 128 pages), less the user reserve
min(total_vm / 32, 128).  Each space boots with its 33-page VM_ACCOUNT stack.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

from fastmodel.vma import FastAddressSpace
from invariants.fault import FaultSnapshot
from invariants.oom import committed_is_charged
from invariants.oom_rules import OomStep, commit_allowed, commit_config, never_overcommits
from refmodel.kernel import RefKernel
from refmodel.vma import RefAddressSpace
from specs.errno import Errno
from specs.kernel import Capability
from specs.machine import PAGE_SIZE, preset
from specs.vma import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    MAP_SHARED,
    OVERCOMMIT_NEVER,
    PROT_READ,
    PROT_WRITE,
    SharedCommitSpace,
    VmCommit,
)

TINY = preset("tiny")
RW = PROT_READ | PROT_WRITE
PRIVATE = MAP_PRIVATE | MAP_ANONYMOUS
SHARED = MAP_SHARED | MAP_ANONYMOUS
ENOMEM = -Errno.ENOMEM
#: ratio 50 of 4096 pages, less the 128-page admin reserve
NEVER_LIMIT = 2048 - 128

Factory = Callable[..., SharedCommitSpace]
FACTORIES = [pytest.param(RefAddressSpace, id="refmodel"),
             pytest.param(FastAddressSpace, id="fastmodel")]


def pages(n: int) -> int:
    return n * PAGE_SIZE


def never(commit: VmCommit) -> None:
    commit.sysctl["overcommit_memory"] = OVERCOMMIT_NEVER


@pytest.mark.parametrize("factory", FACTORIES)
def test_spaces_sharing_a_record_commit_together(factory: Factory) -> None:
    """Two processes' charges add up in one count, and the second is refused what the first
    already holds, though it alone would fit; exit_mmap gives back exactly one mm's share."""
    commit = VmCommit()
    a, b = factory(TINY, commit=commit), factory(TINY, commit=commit)
    assert isinstance(a, SharedCommitSpace)
    assert (66, 66, 66) == (commit.pages, a.view().committed, b.view().committed)
    never(commit)
    assert b.view().overcommit_memory == OVERCOMMIT_NEVER  # the sysctls are shared too
    assert a.mmap(0, pages(1000), RW, PRIVATE) > 0
    # b: total_vm 33 (user reserve 1): 1066 + 900 = 1966 >= 1920 - 1
    assert ENOMEM == b.mmap(0, pages(900), RW, PRIVATE)
    assert 1066 == commit.pages
    # allowed for b is 1919: 1066 + 852 = 1918 fits, one page more would not
    assert b.mmap(0, pages(852), RW, PRIVATE) > 0
    assert ENOMEM == b.mmap(0, pages(1), RW, PRIVATE)
    assert 0 == a.exit_mmap()
    assert (885, (), 0) == (commit.pages, a.view().vmas, a.view().total_vm)


@pytest.mark.parametrize("factory", FACTORIES)
def test_standalone_spaces_keep_their_own_count(factory: Factory) -> None:
    """Without a record (the vma suite's spaces) nothing is shared: the old semantics."""
    a, b = factory(TINY), factory(TINY)
    assert 0 == a.set_sysctl("overcommit_ratio", 10)
    assert (10, 50) == (a.view().overcommit_ratio, b.view().overcommit_ratio)
    assert a.mmap(0, pages(1000), RW, PRIVATE) > 0
    assert (1033, 33) == (a.view().committed, b.view().committed)
    child = a.dup_mm()
    assert not isinstance(child, int)
    assert (1033, 1033) == (a.view().committed, child.view().committed)


@pytest.mark.parametrize("factory", FACTORIES)
def test_shared_fork_keeps_the_child_charges_or_none(factory: Factory) -> None:
    """dup_mm of a sharing space charges the child's copies to the machine and keeps them;
    a refused fork leaves the count exactly as it was."""
    commit = VmCommit()
    parent = factory(TINY, commit=commit)
    never(commit)
    assert parent.mmap(0, pages(700), RW, PRIVATE) > 0
    child = parent.dup_mm()  # 733 + 733 < 1920 - 733 // 32
    assert isinstance(child, SharedCommitSpace)
    assert 1466 == commit.pages == child.view().committed == parent.view().committed
    assert ENOMEM == parent.dup_mm()  # the stack fits, then 1499 + 700 >= 1898
    assert 1466 == commit.pages
    assert 0 == child.exit_mmap()
    assert 733 == commit.pages


@pytest.mark.parametrize("factory", FACTORIES)
def test_shmem_is_charged_once_and_released_by_its_last_holder(factory: Factory) -> None:
    """A shared anonymous object inherited by fork is one object: one charge, released when
    the last process mapping it lets go."""
    commit = VmCommit()
    parent = factory(TINY, commit=commit)
    addr = parent.mmap(0, pages(100), RW, SHARED)
    assert addr > 0
    assert 133 == commit.pages
    child = parent.dup_mm()
    assert isinstance(child, SharedCommitSpace)
    assert 166 == commit.pages  # the child's stack copy, not the object again
    assert 0 == parent.munmap(addr, pages(100))
    assert 66 + 100 == commit.pages  # the child still maps it
    assert 0 == child.exit_mmap()
    assert 33 == commit.pages


def kernel_with(vma: Factory) -> RefKernel:
    return RefKernel(TINY) if vma is RefAddressSpace else RefKernel(TINY, {"vma": vma})


@pytest.mark.parametrize("factory", FACTORIES)
def test_kernel_counts_for_the_machine(factory: Factory) -> None:
    """spawn, fork and exit move the one count; the sysctls reach live and later spaces."""
    k = kernel_with(factory)
    assert Capability.OVERCOMMIT in k.capabilities
    p = k.spawn()
    assert 0 == k.set_sysctl("overcommit_memory", OVERCOMMIT_NEVER)
    assert -Errno.EINVAL == k.set_sysctl("overcommit_memory", 3)
    assert -Errno.EINVAL == k.set_sysctl("vm_swappiness", 1)
    q = k.spawn()
    assert OVERCOMMIT_NEVER == k.space(p).view().overcommit_memory \
        == k.space(q).view().overcommit_memory
    assert k.mmap(p, 0, pages(1000), RW, PRIVATE) > 0
    assert ENOMEM == k.mmap(q, 0, pages(900), RW, PRIVATE)
    child = k.fork(q)
    assert child > 0
    assert 1099 == k.view().committed
    assert 0 == k.exit(p)
    assert 66 == k.view().committed
    assert 0 == k.set_sysctl("overcommit_ratio", 0)  # nothing fits any more
    assert ENOMEM == k.spawn()
    assert 66 == k.view().committed
    assert [q, child] == [proc.pid for proc in k.view().processes]


@pytest.mark.parametrize("space", [0, 1], ids=["pgd", "page-table"])
def test_failed_fork_releases_the_half_built_child(space: int) -> None:
    """A fork that fails on its PGD or on a page table of the child's copy, after dup_mm
    charged the child, gives the charges back with the child's mm."""
    k = RefKernel(TINY)
    p = k.spawn()
    addr = k.mmap(p, 0, pages(8), RW, PRIVATE)
    assert 0 == k.switch(0, p)
    assert isinstance(k.write(0, addr, b"x"), int)
    before = k.view().committed
    assert 0 == k.fail_page_alloc(-1, space)
    assert ENOMEM == k.fork(p)
    assert 0 == k.fail_page_alloc(0)
    assert before == k.view().committed == 41


def test_kernel_without_shared_spaces_has_no_machine_count() -> None:
    """A vma part that does not share: no OVERCOMMIT, -ENOSYS, no count in the view."""

    class Private(RefAddressSpace):
        def __init__(self, config: object) -> None:
            super().__init__(TINY)
            self.capabilities = frozenset(c for c in self.capabilities
                                          if c.value != "shared_commit")

    k = RefKernel(TINY, {"vma": Private})
    assert Capability.OVERCOMMIT not in k.capabilities
    assert -Errno.ENOSYS == k.set_sysctl("overcommit_memory", OVERCOMMIT_NEVER)
    k.spawn()
    assert k.view().committed is None


def snapshot(k: RefKernel) -> FaultSnapshot:
    view = k.view()
    return FaultSnapshot(view=view, tables=k.tables.view(), tlb=k.tlb.view(),
                         spaces={p.pid: k.space(p.pid).view() for p in view.processes},
                         pages=k.pages.view(), page_contents=k.page_contents,
                         file_contents=k.file_contents)


def test_checkers_hold_on_the_kernel_and_see_the_bound() -> None:
    """OOM-I3 holds on the reference kernel; OOM-R8's bound is the kernel's own, so a step
    reaching it exactly is refused and one stopping a page short passes."""
    k = RefKernel(TINY)
    p = k.spawn()
    q = k.spawn()
    k.mmap(q, 0, pages(10), RW, SHARED)
    k.fork(q)
    assert [] == list(committed_is_charged(snapshot(k)))
    assert 0 == k.set_sysctl("overcommit_memory", OVERCOMMIT_NEVER)
    before = snapshot(k)
    allowed = commit_allowed(commit_config(before), before.spaces[p], 33)
    assert NEVER_LIMIT - 1 == allowed
    room = allowed - 1 - (k.view().committed or 0)
    args = {"pid": p, "addr": 0, "length": pages(room), "prot": RW, "flags": PRIVATE}
    result = k.mmap(**args)
    assert result > 0
    step = OomStep(op="mmap", args=args, result=result, before=before, after=snapshot(k))
    assert [] == list(never_overcommits(step))
    # the same step judged against a count one page higher fails
    higher = snapshot(k)
    lied = OomStep(op="mmap", args=args, result=result, before=before,
                   after=attrs.evolve(higher, view=attrs.evolve(higher.view,
                                                                committed=allowed)))
    assert 1 == len(list(never_overcommits(lied)))
    assert ENOMEM == k.mmap(p, 0, pages(1), RW, PRIVATE)
    assert [] == list(committed_is_charged(snapshot(k)))

