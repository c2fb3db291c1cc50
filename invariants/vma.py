"""State invariants of the address space, VMA-I1 .. VMA-I4 (``specs/vma.md``), and the
view-level helpers the operation rules share.

Everything here reads views only (``specs.vma.MmView``), so it judges any implementation,
whatever its placement policy.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from invariants.registry import state_invariant
from specs.machine import PAGE_SHIFT, MachineConfig
from specs.vma import (
    TASK_SIZE,
    VM_ACCOUNT,
    VM_EXEC,
    VM_LOCKED,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_SPECIAL,
    VM_STACK,
    VM_WRITE,
    AddressSpace,
    Capability,
    MmView,
    ProcessConfig,
    VmaView,
    process_config,
)


@attrs.frozen
class VmaState:
    """What a state invariant sees after a step."""

    impl: AddressSpace
    view: MmView

    @property
    def config(self) -> MachineConfig:
        return self.impl.config

    @property
    def pconf(self) -> ProcessConfig:
        return process_config(self.impl.config)


@attrs.frozen
class VmaStep:
    """One operation as a rule judges it."""

    op: str
    args: dict[str, int]
    result: int
    before: MmView
    after: MmView
    impl: AddressSpace
    #: dup_mm only: the child's view when a child came back (``result`` is then 0), else None
    child: MmView | None = None
    #: anon_vma identities whose VMAs' anon_vma_chain is not singular: the ones a dup_mm
    #: gave this mm (every copy's chain also links the parent's anon_vmas; splits, merges and
    #: mremap copies keep that chain).  The view cannot show chains; the machine knows them.
    inherited: frozenset[int] = frozenset()

    @property
    def pconf(self) -> ProcessConfig:
        return process_config(self.impl.config)


# ---------------------------------------------------------------------------------------------
# View helpers
# ---------------------------------------------------------------------------------------------


def show(vma: VmaView) -> str:
    """One VMA the way /proc/<pid>/maps prints its range and protections."""
    prot = "".join(c if vma.flags & bit else "-"
                   for bit, c in ((1, "r"), (2, "w"), (4, "x")))
    kind = "s" if vma.flags & VM_SHARED else "p"
    return (f"{vma.start:x}-{vma.end:x} {prot}{kind} pgoff={vma.pgoff:#x} flags={vma.flags:#x}"
            f" file={vma.file} anon_vma={vma.anon_vma}")


@attrs.frozen
class Segment:
    """A page range with everything a page inherits from its VMA; VMA boundaries forgotten.
    ``pgoff`` is the file page (or anonymous index) of ``start``."""

    start: int
    end: int
    flags: int
    pgoff: int
    file: int | None
    anon_vma: int | None


def segments(vmas: tuple[VmaView, ...] | list[VmaView], lo: int = 0,
             hi: int = 1 << 64) -> list[Segment]:
    """The mapped pages of [lo, hi), coalescing neighbours a page could not tell apart
    (VM_SOFTDIRTY ignored: it never affects what a page is)."""
    out: list[Segment] = []
    for vma in vmas:
        start, end = max(vma.start, lo), min(vma.end, hi)
        if start >= end:
            continue
        seg = Segment(start=start, end=end, flags=vma.flags & ~VM_SOFTDIRTY,
                      pgoff=vma.pgoff + ((start - vma.start) >> PAGE_SHIFT), file=vma.file,
                      anon_vma=vma.anon_vma)
        if out:
            last = out[-1]
            if (last.end == seg.start and last.flags == seg.flags and last.file == seg.file
                    and last.anon_vma == seg.anon_vma
                    and last.pgoff + ((last.end - last.start) >> PAGE_SHIFT) == seg.pgoff):
                out[-1] = attrs.evolve(last, end=seg.end)
                continue
        out.append(seg)
    return out


def covered(vmas: tuple[VmaView, ...] | list[VmaView], lo: int, hi: int) -> bool:
    """Every page of [lo, hi) is mapped."""
    at = lo
    for seg in segments(vmas, lo, hi):
        if seg.start != at:
            return False
        at = seg.end
    return at >= hi


def intersecting(vmas: tuple[VmaView, ...], lo: int, hi: int) -> list[VmaView]:
    return [v for v in vmas if v.start < hi and lo < v.end]


def trim(vmas: tuple[VmaView, ...] | list[VmaView], lo: int, hi: int) -> list[VmaView]:
    """The VMAs after [lo, hi) is unmapped: do_munmap's splits keep each piece's pgoff
    linear [4.6: mm/mmap.c do_munmap, __split_vma]."""
    out: list[VmaView] = []
    for vma in vmas:
        if vma.end <= lo or vma.start >= hi:
            out.append(vma)
            continue
        if vma.start < lo:
            out.append(attrs.evolve(vma, end=lo))
        if vma.end > hi:
            out.append(attrs.evolve(vma, start=hi,
                                    pgoff=vma.pgoff + ((hi - vma.start) >> PAGE_SHIFT)))
    return out


def anon_compatible(request: int | None, existing: VmaView,
                    inherited: frozenset[int] = frozenset()) -> bool:
    """is_mergeable_anon_vma(request, existing.anon_vma, existing): a missing anon_vma on
    either side is compatible only when the existing VMA's chain is singular, i.e. it has an
    anon_vma that did not come from dup_mm (``inherited``)."""
    singular = existing.anon_vma is not None and existing.anon_vma not in inherited
    if (request is None or existing.anon_vma is None) and singular:
        return True
    return request == existing.anon_vma


def mergeable_flags(a: int, b: int) -> bool:
    return not (a ^ b) & ~VM_SOFTDIRTY and not a & VM_SPECIAL


def merge_insert(vmas: list[VmaView], new: VmaView,
                 inherited: frozenset[int] = frozenset()) -> list[VmaView]:
    """vma_merge cases 1-3 for a new VMA with no anon_vma placed in a hole, then the link;
    ``inherited`` as for :func:`anon_compatible`."""
    i = next((k for k, v in enumerate(vmas) if v.start >= new.end), len(vmas))
    prev = vmas[i - 1] if i and vmas[i - 1].end <= new.start else None
    nxt = vmas[i] if i < len(vmas) else None
    pglen = new.pages
    can_prev = (prev is not None and prev.end == new.start
                and mergeable_flags(prev.flags, new.flags) and prev.file == new.file
                and anon_compatible(new.anon_vma, prev, inherited)
                and prev.pgoff + prev.pages == new.pgoff)
    can_next = (nxt is not None and nxt.start == new.end
                and mergeable_flags(nxt.flags, new.flags) and nxt.file == new.file
                and anon_compatible(new.anon_vma, nxt, inherited)
                and nxt.pgoff == new.pgoff + pglen)
    head, tail = vmas[:i - 1] if prev is not None else vmas[:i], vmas[i:]
    if can_prev and prev is not None:
        if can_next and nxt is not None and (prev.anon_vma is None or nxt.anon_vma is None
                                             or prev.anon_vma == nxt.anon_vma):
            return [*head, attrs.evolve(prev, end=nxt.end, flags=prev.flags | VM_SOFTDIRTY,
                                        anon_vma=prev.anon_vma or nxt.anon_vma), *tail[1:]]
        return [*head, attrs.evolve(prev, end=new.end, flags=prev.flags | VM_SOFTDIRTY),
                *tail]
    if can_next and nxt is not None:
        return [*(head + ([prev] if prev is not None else [])),
                attrs.evolve(nxt, start=new.start, pgoff=new.pgoff,
                             flags=nxt.flags | VM_SOFTDIRTY), *tail[1:]]
    return [*(head + ([prev] if prev is not None else [])), new, *tail]


def vm_class_sums(vmas: tuple[VmaView, ...]) -> dict[str, int]:
    """total/exec/stack/data/locked pages by 4.6's vm_stat_account classes."""
    sums = dict.fromkeys(("total_vm", "exec_vm", "stack_vm", "data_vm", "locked_vm"), 0)
    for v in vmas:
        sums["total_vm"] += v.pages
        if (v.flags & (VM_EXEC | VM_WRITE | VM_STACK)) == VM_EXEC:
            sums["exec_vm"] += v.pages
        elif v.flags & VM_STACK:
            sums["stack_vm"] += v.pages
        elif (v.flags & (VM_WRITE | VM_SHARED | VM_STACK)) == VM_WRITE:
            sums["data_vm"] += v.pages
        if v.flags & VM_LOCKED:
            sums["locked_vm"] += v.pages
    return sums


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------


@state_invariant("VMA-I1", "VMAs are sorted, disjoint, page-aligned and inside the user range")
def check_layout(state: VmaState) -> Iterator[str]:
    """[4.6: mm/mmap.c validate_mm, browse_rb]"""
    low = state.pconf.mmap_min_addr
    prev_end = 0
    for vma in state.view.vmas:
        if vma.start & 0xFFF or vma.end & 0xFFF:
            yield f"not page aligned: {show(vma)}"
        if vma.start >= vma.end:
            yield f"empty or inverted: {show(vma)}"
        if vma.start < low or vma.end > TASK_SIZE:
            yield f"outside [{low:#x}, TASK_SIZE): {show(vma)}"
        if vma.start < prev_end:
            yield f"overlaps or is out of order with the VMA ending at {prev_end:#x}: {show(vma)}"
        prev_end = max(prev_end, vma.end)


@state_invariant("VMA-I2", "map_count is the number of VMAs")
def check_map_count(state: VmaState) -> Iterator[str]:
    """[4.6: mm/mmap.c validate_mm] the mm's count moves with every link and unlink."""
    if state.view.map_count != len(state.view.vmas):
        yield f"map_count {state.view.map_count}, but {len(state.view.vmas)} VMAs"


@state_invariant("VMA-I3", "the mm counters are the sums over the VMAs")
def check_counters(state: VmaState) -> Iterator[str]:
    """[4.6: mm/mmap.c vm_stat_account] each VMA counts in total_vm and in the first class
    it matches (exec, stack, data); locked_vm counts VM_LOCKED VMAs."""
    view = state.view
    for name, want in vm_class_sums(view.vmas).items():
        got = getattr(view, name)
        if got != want:
            yield f"{name} is {got}, the VMAs add up to {want}"


@state_invariant("VMA-I4", "committed memory covers every charge",
                 needs=[Capability.OVERCOMMIT])
def check_committed(state: VmaState) -> Iterator[str]:
    """[4.6: mm/util.c __vm_enough_memory, vm_unacct_memory; mm/shmem.c shmem_acct_size;
    mm/mmap.c acct_stack_growth] At least the pages of VM_ACCOUNT VMAs plus each live shmem
    object's charge.  More is possible: 4.6 charges the growth of a stack that lacks
    VM_ACCOUNT and never gives it back."""
    view = state.view
    accounted = sum(v.pages for v in view.vmas if v.flags & VM_ACCOUNT)
    shmem = sum(f.charged for f in view.files)
    if view.committed < accounted + shmem:
        yield (f"committed is {view.committed} pages; VM_ACCOUNT VMAs hold {accounted} and "
               f"shmem objects {shmem}")
