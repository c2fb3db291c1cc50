"""Operation rules of the address space, VMA-R1 .. VMA-R10 (``specs/vma.md``).

A rule judges one step from its arguments, its result and the views before and after.  Where
4.6's answer follows from those alone (an invalid argument, a munmap, the attributes of a new
mapping at the address the implementation chose) the rule demands it exactly; where it depends
on a free choice (placement) or on state the views do not show, the rule checks what every
correct implementation must still satisfy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import attrs

from invariants.registry import step_rule
from invariants.vma import (
    Segment,
    VmaStep,
    covered,
    intersecting,
    merge_insert,
    mergeable_flags,
    segments,
    show,
    trim,
    vm_class_sums,
)
from specs.errno import Errno, describe
from specs.machine import PAGE_SHIFT, PAGE_SIZE
from specs.vma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_HUGETLB,
    MAP_LOCKED,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_TYPE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    OVERCOMMIT_ALWAYS,
    OVERCOMMIT_GUESS,
    OVERCOMMIT_NEVER,
    PAGE_MASK,
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_READ,
    PROT_SEM,
    PROT_WRITE,
    TASK_SIZE,
    ULONG_MASK,
    VM_ACCOUNT,
    VM_DATA_DEFAULT_FLAGS,
    VM_DONTCOPY,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_LOCKED_CLEAR_MASK,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NORESERVE,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_WRITE,
    Capability,
    FileView,
    MmView,
    VmaView,
    page_align,
)

EINVAL: Final = -Errno.EINVAL
ENOMEM: Final = -Errno.ENOMEM
EBADF: Final = -Errno.EBADF
EACCES: Final = -Errno.EACCES
EFAULT: Final = -Errno.EFAULT
EOVERFLOW: Final = -Errno.EOVERFLOW
EPERM: Final = -Errno.EPERM
EAGAIN: Final = -Errno.EAGAIN
RWX: Final = 0x7


def u64(value: int) -> int:
    return value & ULONG_MASK


def fd_file(view: MmView, fd: int) -> FileView | None:
    fd &= 0xFFFF_FFFF
    return next((f for f in view.files if f.fd == fd), None)


# ---------------------------------------------------------------------------------------------
# mmap: what the arguments alone decide
# ---------------------------------------------------------------------------------------------


def mmap_argument_error(step: VmaStep) -> int | None:
    """The errno 4.6 returns for these arguments whatever the layout, or None when the
    arguments are acceptable [4.6: sys_mmap, sys_mmap_pgoff, do_mmap, get_unmapped_area]."""
    return mmap_argument_check(step)[0]


def mmap_argument_check(step: VmaStep) -> tuple[int | None, bool]:
    """(errno or None, whether the check comes after placement in 4.6's order)."""
    a = {k: u64(v) for k, v in step.args.items()}
    addr, length, prot, flags, offset = a["addr"], a["length"], a["prot"], a["flags"], \
        a["offset"]
    before = step.before
    if offset & ~PAGE_MASK:
        return EINVAL, False
    file = None
    if not flags & MAP_ANONYMOUS:
        file = fd_file(before, a["fd"])
        if file is None:
            return EBADF, False
        if flags & MAP_HUGETLB:
            return EINVAL, False
    elif flags & MAP_HUGETLB:
        return None, False  # hugetlb is a known departure (specs/vma.md): lockstep only
    if length == 0:
        return EINVAL, False
    aligned = page_align(length)
    if aligned == 0:
        return ENOMEM, False
    if (offset >> PAGE_SHIFT) + (aligned >> PAGE_SHIFT) > ULONG_MASK:
        return EOVERFLOW, False
    if before.map_count > before.max_map_count:
        return ENOMEM, False
    if aligned > TASK_SIZE:
        return ENOMEM, False
    if flags & MAP_FIXED:
        if addr > TASK_SIZE - aligned:
            return ENOMEM, False
        if addr & ~PAGE_MASK:
            return EINVAL, False
        if addr < step.pconf.mmap_min_addr:
            return EPERM, False
    return mmap_type_error(step, file, prot, flags, aligned), True


def mmap_type_error(step: VmaStep, file: FileView | None, prot: int, flags: int,
                    length: int) -> int | None:
    """The checks after placement: mlock, the mapping type, file permissions."""
    if flags & MAP_LOCKED:
        if step.pconf.rlimit_memlock == 0:
            return EPERM
        if step.before.locked_vm + (length >> PAGE_SHIFT) > step.pconf.rlimit_memlock \
                >> PAGE_SHIFT:
            return EAGAIN
    kind = flags & MAP_TYPE
    if kind not in (MAP_SHARED, MAP_PRIVATE):
        return EINVAL
    if file is not None:
        if kind == MAP_SHARED and prot & PROT_WRITE and not file.writable:
            return EACCES
        if not file.readable:
            return EACCES
        if flags & MAP_GROWSDOWN:
            return EINVAL
    elif kind == MAP_SHARED and flags & MAP_GROWSDOWN:
        return EINVAL
    return None


def expected_new_vma(step: VmaStep, addr: int, length: int) -> VmaView:
    """The VMA mmap_region would create at addr (before any merge)."""
    a = {k: u64(v) for k, v in step.args.items()}
    prot, flags = a["prot"], a["flags"]
    before = step.before
    file = None if flags & MAP_ANONYMOUS else fd_file(before, a["fd"])
    vm = (prot & RWX) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    vm |= (VM_GROWSDOWN if flags & MAP_GROWSDOWN else 0) | (VM_LOCKED if flags & MAP_LOCKED
                                                              else 0)
    pgoff = a["offset"] >> PAGE_SHIFT
    if (flags & MAP_TYPE) == MAP_SHARED:
        vm |= VM_SHARED | VM_MAYSHARE
        if file is not None and not file.writable:
            vm &= ~(VM_MAYWRITE | VM_SHARED)
        if file is None:
            pgoff = 0
    elif file is None:
        pgoff = addr >> PAGE_SHIFT
    if flags & MAP_NORESERVE and before.overcommit_memory != OVERCOMMIT_NEVER:
        vm |= VM_NORESERVE
    if (vm & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE:
        vm |= VM_ACCOUNT
    return VmaView(start=addr, end=addr + length, flags=vm | VM_SOFTDIRTY, pgoff=pgoff,
                   file=None if file is None else file.ident, anon_vma=None)


@step_rule("VMA-R1", "mmap refuses invalid arguments with 4.6's errno", ops=["mmap"])
def mmap_refusals(step: VmaStep) -> Iterator[str]:
    """[4.6: arch/x86/kernel/sys_x86_64.c sys_mmap; mm/mmap.c sys_mmap_pgoff, do_mmap,
    get_unmapped_area; security/commoncap.c cap_mmap_addr]"""
    want, late = mmap_argument_check(step)
    # Without MAP_FIXED, placement runs before the type and permission checks, and whether it
    # finds room depends on the layout: -ENOMEM may come first.
    allowed = {want, ENOMEM} if late and not u64(step.args["flags"]) & MAP_FIXED else {want}
    if want is not None and step.result not in allowed:
        yield f"returned {describe(step.result)}, 4.6 returns {describe(want)}"
    if want is None and step.result in (EBADF, EOVERFLOW, EACCES):
        yield f"returned {describe(step.result)} for valid arguments"


# ---------------------------------------------------------------------------------------------
# VMA-R2: refusals change nothing
# ---------------------------------------------------------------------------------------------


def _same(before: MmView, after: MmView) -> bool:
    return before == after


@step_rule("VMA-R2", "a refused call leaves the address space unchanged",
           ops=["mmap", "munmap", "mremap", "brk", "touch", "open_file", "set_sysctl"])
def refusals_change_nothing(step: VmaStep) -> Iterator[str]:
    """Except where 4.6 itself is not atomic: MAP_FIXED may have unmapped its range before an
    -ENOMEM, MREMAP_FIXED may have unmapped its target and the old tail, touch may have grown
    a stack or prepared an anon_vma before its signal (mprotect: VMA-R5)."""
    before, after, args = step.before, step.after, step.args
    refused = step.result < 0 or (step.op == "brk" and step.result == before.brk
                                  and u64(args["addr"]) != before.brk)
    if not refused or _same(before, after) or step.op == "touch":
        return
    if step.op == "mmap" and u64(args["flags"]) & MAP_FIXED and step.result == ENOMEM:
        lo = u64(args["addr"])
        hi = lo + page_align(u64(args["length"]))
        if after.vmas == tuple(trim(before.vmas, lo, hi)):
            return
    if step.op == "mremap" and u64(args["flags"]) & MREMAP_FIXED:
        target = u64(args["new_addr"])
        new_len, old_len = page_align(u64(args["new_len"])), page_align(u64(args["old_len"]))
        unmapped = trim(before.vmas, target, target + new_len)
        tail = trim(unmapped, u64(u64(args["old_addr"]) + new_len),
                    u64(u64(args["old_addr"]) + old_len)) if old_len > new_len else unmapped
        if after.vmas in (tuple(unmapped), tuple(tail)):
            return
    yield f"{step.op} returned {describe(step.result)} but changed the address space"


# ---------------------------------------------------------------------------------------------
# VMA-R3: munmap
# ---------------------------------------------------------------------------------------------


@step_rule("VMA-R3", "munmap removes exactly its range", ops=["munmap"])
def munmap_rule(step: VmaStep) -> Iterator[str]:
    """[4.6: mm/mmap.c do_munmap] Unmapping nothing is success; the pieces left on either
    side keep their pgoff; a split in the middle of one VMA is refused at the limit."""
    start, length = u64(step.args["addr"]), u64(step.args["length"])
    before, after = step.before, step.after
    if start & ~PAGE_MASK or start > TASK_SIZE or length > TASK_SIZE - start \
            or page_align(length) == 0:
        if step.result != EINVAL:
            yield f"returned {describe(step.result)} for invalid arguments, 4.6 returns -EINVAL"
        return
    end = start + page_align(length)
    inside = [v for v in before.vmas if v.start < start and end < v.end]
    if inside and before.map_count >= before.max_map_count:
        if step.result != ENOMEM:
            yield (f"splitting {show(inside[0])} at map_count {before.map_count} >= "
                   f"max_map_count {before.max_map_count}: returned {describe(step.result)}, "
                   "4.6 returns -ENOMEM")
        return
    if step.result != 0:
        yield f"returned {describe(step.result)}, 4.6 returns 0"
        return
    want = tuple(trim(before.vmas, start, end))
    if after.vmas != want:
        yield (f"VMAs after unmapping [{start:#x}, {end:#x}) are not the old ones trimmed:\n    "
               + _list_diff(want, after.vmas))


def _list_diff(want: tuple[VmaView, ...] | list[VmaView],
               got: tuple[VmaView, ...] | list[VmaView]) -> str:
    for w, g in zip(want, got, strict=False):
        if w != g:
            return f"expected {show(w)}\n    got      {show(g)}"
    if len(want) > len(got):
        return f"missing {show(want[len(got)])}"
    if len(got) > len(want):
        return f"unexpected {show(got[len(want)])}"
    return "(equal)"


# ---------------------------------------------------------------------------------------------
# VMA-R4: a successful mmap
# ---------------------------------------------------------------------------------------------


@step_rule("VMA-R4", "mmap maps exactly its range and merges as 4.6 does", ops=["mmap"])
def mmap_result(step: VmaStep) -> Iterator[str]:
    """[4.6: mm/mmap.c mmap_region, vma_merge] Everything else is kept (MAP_FIXED replaces
    what was there); the new VMA's flags and pgoff follow do_mmap; it merges with a
    neighbour exactly when vma_merge would."""
    if step.result < 0:
        return
    a = {k: u64(v) for k, v in step.args.items()}
    addr = step.result
    length = page_align(a["length"])
    before, after = step.before, step.after
    if addr & ~PAGE_MASK or addr < step.pconf.mmap_min_addr or addr + length > TASK_SIZE:
        yield f"returned {addr:#x}: not a page-aligned range inside the user address space"
        return
    if a["flags"] & MAP_FIXED:
        if addr != a["addr"]:
            yield f"MAP_FIXED at {a['addr']:#x} returned {addr:#x}"
    elif intersecting(before.vmas, addr, addr + length):
        yield f"placed [{addr:#x}, {addr + length:#x}) over existing VMAs without MAP_FIXED"
        return
    new = expected_new_vma(step, addr, length)
    if new.file is None and new.flags & VM_SHARED:
        fresh = [f.ident for f in after.files if f.shmem and f.ident not in
                 {g.ident for g in before.files}]
        if len(fresh) != 1:
            yield "a shared anonymous mapping must get exactly one new shmem object"
            return
        new = VmaView(start=new.start, end=new.end, flags=new.flags, pgoff=new.pgoff,
                      file=fresh[0], anon_vma=None)
    want = merge_insert(trim(before.vmas, addr, addr + length), new, step.inherited)
    if after.vmas != tuple(want):
        yield (f"after mapping [{addr:#x}, {addr + length:#x}) the VMAs are not what 4.6 "
               "leaves:\n    " + _list_diff(want, after.vmas))


# ---------------------------------------------------------------------------------------------
# VMA-R5: mprotect
# ---------------------------------------------------------------------------------------------


def _flags_at(segs: list[tuple[int, int, int]], addr: int) -> int | None:
    for lo, hi, flags in segs:
        if lo <= addr < hi:
            return flags
    return None


def mprotect_blocker(step: VmaStep, start: int, end: int, prot: int) -> tuple[int, int] | None:
    """(address, errno) of the first hole or permission refusal in [start, end), scanning as
    mprotect does, or None."""
    at = start
    for vma in step.before.vmas:
        if vma.end <= at:
            continue
        if vma.start > at or at >= end:
            break
        newflags = (prot & RWX) | (vma.flags & ~RWX)
        if (newflags & ~(newflags >> 4)) & RWX:
            return at, EACCES
        at = vma.end
        if at >= end:
            return None
    return (at, ENOMEM) if at < end else None


@step_rule("VMA-R5", "mprotect changes exactly its range and is not rolled back",
           ops=["mprotect"])
def mprotect_rule(step: VmaStep) -> Iterator[str]:
    """[4.6: mm/mprotect.c sys_mprotect, mprotect_fixup] Pages outside the range keep
    everything; inside, only the protection changes (VM_ACCOUNT may be added); changed pieces
    merge with neighbours 4.6 would merge them with; a refusal part-way keeps the changes
    made before it."""
    a = {k: u64(v) for k, v in step.args.items()}
    start, length, prot = a["addr"], a["length"], a["prot"]
    before, after = step.before, step.after
    grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
    prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
    end = u64(start + page_align(length))
    if grows == PROT_GROWSDOWN | PROT_GROWSUP or start & ~PAGE_MASK:
        want: int | None = EINVAL
    elif length == 0:
        want = 0
    elif end <= start:
        want = ENOMEM
    elif prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):
        want = EINVAL
    else:
        want = None
    if want is not None:
        if step.result != want:
            yield f"returned {describe(step.result)}, 4.6 returns {describe(want)}"
        if before != after:
            yield "refused before looking at any VMA, yet changed the address space"
        return
    first = before.find(start)
    if first is None:
        want = ENOMEM
    elif grows & PROT_GROWSDOWN:
        want = ENOMEM if first.start >= end else None if first.flags & VM_GROWSDOWN else EINVAL
        start = first.start
    elif first.start > start:
        want = ENOMEM
    elif grows & PROT_GROWSUP:
        want = EINVAL  # x86-64 has no VM_GROWSUP
    if want is not None:
        if step.result != want:
            yield f"returned {describe(step.result)}, 4.6 returns {describe(want)}"
        if before != after:
            yield "refused at its first VMA, yet changed the address space"
        return
    # Where does the change stop?
    old = [(s.start, s.end, s.flags) for s in segments(before.vmas, start, end)]
    new = [(s.start, s.end, s.flags) for s in segments(after.vmas, start, end)]
    if _outside_changed(before, after, start, end, prot):
        yield ("pages outside the range changed, or a changed piece with an anon_vma absorbed "
               "an unchanged neighbour without one")
    points = sorted({start, end, *(p for seg in old + new for p in seg[:2] if start < p < end)})
    changed_upto = start
    for lo in points[:-1]:
        was, now = _flags_at(old, lo), _flags_at(new, lo)
        if was is None or now is None or (now & RWX) != (prot & RWX) or (
                now & ~RWX & ~VM_ACCOUNT) != (was & ~RWX & ~VM_ACCOUNT) or lo != changed_upto:
            break
        changed_upto = points[points.index(lo) + 1]
    if step.result == 0:
        if not covered(after.vmas, start, end) or changed_upto < end:
            yield f"succeeded but [{changed_upto:#x}, {end:#x}) lacks the new protection"
        yield from _unmerged_changes(before, after, start, end, prot)
        return
    blocker = mprotect_blocker(step, start, end, prot)
    quiet = (not prot & PROT_WRITE or before.overcommit_memory == OVERCOMMIT_ALWAYS) and (
        before.map_count + 2 < before.max_map_count)
    if blocker is not None and quiet:
        where, errno = blocker
        if step.result != errno:
            yield f"returned {describe(step.result)}, 4.6 returns {describe(errno)} at {where:#x}"
        elif changed_upto < where:
            yield (f"refused at {where:#x} but [{changed_upto:#x}, {where:#x}) lacks the new "
                   "protection: 4.6 does not roll back the VMAs already changed")
        elif segments(before.vmas, where, end) != segments(after.vmas, where, end):
            yield f"refused at {where:#x} but changed pages beyond it"


def _outside_changed(before: MmView, after: MmView, start: int, end: int, prot: int) -> bool:
    """Pages outside [start, end) keep everything, except that a page with no anon_vma may
    get one: a merge hands the absorbed VMA's anon_vma to its neighbour [4.6: vma_adjust]."""
    for lo, hi in ((0, start), (end, 1 << 64)):
        old, new = segments(before.vmas, lo, hi), segments(after.vmas, lo, hi)
        if _no_anon(old) != _no_anon(new):
            return True
        for seg in old:
            if seg.anon_vma is not None and any(
                    n.anon_vma != seg.anon_vma for n in new if n.start < seg.end
                    and seg.start < n.end):
                return True
    # A changed piece that has an anon_vma never absorbs an unchanged neighbour that has
    # none: is_mergeable_anon_vma refuses (the neighbour's anon_vma_chain is empty).
    for left, right in zip(before.vmas, before.vmas[1:], strict=False):
        if left.end != right.start or not start <= left.end <= end:
            continue
        sides = []
        for vma, page in ((left, left.end - PAGE_SIZE), (right, right.start)):
            changed = start <= page < end and (vma.flags & RWX) != (prot & RWX)
            sides.append((changed, vma.anon_vma))
        pattern = {(True, True), (False, False)} == {(c, a is not None) for c, a in sides}
        joined = after.find(left.end - PAGE_SIZE) == after.find(right.start) is not None
        if pattern and joined:
            return True
    return False


def _no_anon(segs: list[Segment]) -> list[tuple[int, int, int, int | None]]:
    """The segments with anon_vma forgotten and re-coalesced."""
    out: list[tuple[int, int, int, int | None]] = []
    for seg in segs:
        if out and out[-1][1] == seg.start and out[-1][2] == seg.flags and out[-1][3] \
                == seg.file:
            out[-1] = (out[-1][0], seg.end, seg.flags, seg.file)
        else:
            out.append((seg.start, seg.end, seg.flags, seg.file))
    return out


def _unmerged_changes(before: MmView, after: MmView, start: int, end: int,
                      prot: int) -> Iterator[str]:
    """A boundary next to a changed page, between two VMAs with equal flags, the same file,
    continuous pgoff and the same anon_vma, is one vma_merge always removes."""
    for left, right in zip(after.vmas, after.vmas[1:], strict=False):
        if left.end != right.start or not start <= right.start <= end:
            continue
        touched = False
        for page in (right.start - PAGE_SIZE, right.start):
            old = before.find(page)
            if start <= page < end and old is not None and old.start <= page and (
                    old.flags & RWX) != (prot & RWX):
                touched = True
        if (touched and mergeable_flags(left.flags, right.flags) and left.file == right.file
                and left.anon_vma == right.anon_vma and left.pgoff + left.pages == right.pgoff):
            yield f"left unmerged after mprotect:\n    {show(left)}\n    {show(right)}"


# ---------------------------------------------------------------------------------------------
# VMA-R6: the map_count limit
# ---------------------------------------------------------------------------------------------


@step_rule("VMA-R6", "the map_count limits: > for a new VMA, >= for a split",
           ops=["mmap", "mprotect"])
def map_count_limit(step: VmaStep) -> Iterator[str]:
    """[4.6: mm/mmap.c do_mmap, split_vma] A new mapping is refused only once map_count
    exceeds max_map_count; a split already when it reaches it."""
    before = step.before
    a = {k: u64(v) for k, v in step.args.items()}
    limit = before.max_map_count
    if step.op == "mmap":
        if mmap_argument_error(step) is not None or a["flags"] & MAP_HUGETLB:
            return
        if before.map_count > limit and step.result != ENOMEM:
            yield f"map_count {before.map_count} > max_map_count {limit}, yet mmap returned " \
                  f"{describe(step.result)}"
        quiet = before.overcommit_memory != OVERCOMMIT_NEVER and not a["flags"] & MAP_LOCKED \
            and page_align(a["length"]) <= 64 * PAGE_SIZE
        if (before.map_count == limit and step.result == ENOMEM and quiet
                and a["flags"] & MAP_FIXED and not intersecting(
                    before.vmas, a["addr"], a["addr"] + page_align(a["length"]))):
            yield f"mmap into a hole refused at map_count == max_map_count ({limit}); 4.6 " \
                  "refuses only above it"
        return
    start, end = a["addr"], u64(a["addr"] + page_align(a["length"]))
    prot = a["prot"]
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM) or start & ~PAGE_MASK \
            or end <= start or prot & PROT_WRITE:
        return
    vma = before.find(start)
    if vma is None or vma.start >= start or end >= vma.end or (vma.flags & RWX) == (prot & RWX):
        return  # only a change strictly inside one VMA, which must split twice
    if (prot & RWX) & ~((vma.flags >> 4) & RWX):
        return
    if before.map_count >= limit and (step.result != ENOMEM or before != step.after):
        yield f"a split at map_count {before.map_count} >= max_map_count {limit} returned " \
              f"{describe(step.result)}; 4.6 refuses the first split with -ENOMEM"
    if before.map_count == limit - 1 and step.result != ENOMEM:
        yield f"two splits from map_count {before.map_count}, max_map_count {limit}, returned " \
              f"{describe(step.result)}; 4.6 refuses the second with -ENOMEM"
    if before.map_count + 2 < limit and step.result != 0:
        yield f"mprotect inside {show(vma)} below the limit returned {describe(step.result)}"


# ---------------------------------------------------------------------------------------------
# VMA-R7: brk
# ---------------------------------------------------------------------------------------------


@step_rule("VMA-R7", "brk returns the new or the old break and moves the heap with it",
           ops=["brk"])
def brk_rule(step: VmaStep) -> Iterator[str]:
    """[4.6: mm/mmap.c sys_brk, do_brk] Never an errno; below start_brk, or growing into a
    VMA or to within one page of it, returns the old break."""
    want = u64(step.args["addr"])
    before, after = step.before, step.after
    old = before.brk
    if step.result not in (want, old):
        yield f"returned {step.result:#x}; 4.6 returns the request {want:#x} or the old {old:#x}"
        return
    if after.brk != step.result:
        yield f"returned {step.result:#x} but the view's brk is {after.brk:#x}"
    oldbrk, newbrk = page_align(old), page_align(want)
    if want < before.start_brk and step.result != old:
        yield "a break below start_brk must be refused"
    if want > old and newbrk > oldbrk and intersecting(
            before.vmas, oldbrk, u64(newbrk + PAGE_SIZE)) and step.result != old:
        yield "grew the heap into (or to within a page of) an existing VMA"
    if step.result == want != old and newbrk > oldbrk:
        heap = segments(after.vmas, oldbrk, newbrk)
        if not covered(after.vmas, oldbrk, newbrk) or any(
                (s.flags & ~VM_SOFTDIRTY) != VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT or s.file
                is not None for s in heap):
            yield f"[{oldbrk:#x}, {newbrk:#x}) is not covered by private read-write heap VMAs"
    if step.result == want != old and newbrk < oldbrk and intersecting(
            after.vmas, newbrk, oldbrk):
        yield f"shrank the break but [{newbrk:#x}, {oldbrk:#x}) is still mapped"


# ---------------------------------------------------------------------------------------------
# VMA-R8: mremap
# ---------------------------------------------------------------------------------------------


def mremap_argument_error(step: VmaStep) -> int | None:
    a = {k: u64(v) for k, v in step.args.items()}
    flags = a["flags"]
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE):
        return EINVAL
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        return EINVAL
    if a["old_addr"] & ~PAGE_MASK or page_align(a["new_len"]) == 0:
        return EINVAL
    if flags & MREMAP_FIXED:
        new_addr, new_len = a["new_addr"], page_align(a["new_len"])
        old_len = page_align(a["old_len"])
        if new_addr & ~PAGE_MASK or new_len > TASK_SIZE or new_addr > TASK_SIZE - new_len:
            return EINVAL
        if u64(a["old_addr"] + old_len) > new_addr and new_addr + new_len > a["old_addr"]:
            return EINVAL
    return None


@step_rule("VMA-R8", "mremap follows 4.6's argument checks, moves only when allowed",
           ops=["mremap"])
def mremap_rule(step: VmaStep) -> Iterator[str]:
    """[4.6: mm/mremap.c sys_mremap, mremap_to, vma_to_resize] Without MREMAP_MAYMOVE the
    mapping stays where it is; with MREMAP_FIXED it lands at new_addr; the new range is mapped
    with the old protection and file."""
    want = mremap_argument_error(step)
    a = {k: u64(v) for k, v in step.args.items()}
    if want is not None:
        if step.result != want:
            yield f"returned {describe(step.result)}, 4.6 returns {describe(want)}"
        return
    old_addr, old_len, new_len = a["old_addr"], page_align(a["old_len"]), page_align(
        a["new_len"])
    before, after = step.before, step.after
    if not a["flags"] & MREMAP_FIXED and new_len > old_len:
        vma = before.find(old_addr)
        if vma is None or vma.start > old_addr or old_len > vma.end - old_addr:
            if step.result != EFAULT:
                yield (f"growing a range not inside one VMA returned {describe(step.result)}, "
                       "4.6 returns -EFAULT")
            return
    if step.result < 0:
        return
    if not a["flags"] & MREMAP_MAYMOVE and step.result != old_addr:
        yield f"moved to {step.result:#x} without MREMAP_MAYMOVE"
    if a["flags"] & MREMAP_FIXED and step.result != a["new_addr"]:
        yield f"MREMAP_FIXED to {a['new_addr']:#x} returned {step.result:#x}"
    source = before.find(old_addr)
    if source is None or source.start > old_addr or (new_len <= old_len
                                                     and step.result == old_addr):
        return
    if not covered(after.vmas, step.result, step.result + new_len):
        yield f"[{step.result:#x}, {step.result + new_len:#x}) is not mapped after mremap"
        return
    for seg in segments(after.vmas, step.result, step.result + new_len):
        if (seg.flags & ~VM_ACCOUNT) != (source.flags & ~VM_ACCOUNT & ~VM_SOFTDIRTY) or \
                seg.file != source.file:
            yield f"the remapped range has flags {seg.flags:#x} file {seg.file}, the source " \
                  f"{show(source)}"
            break


# ---------------------------------------------------------------------------------------------
# VMA-R9: touch
# ---------------------------------------------------------------------------------------------


def anon_vma_compatible(a: VmaView, b: VmaView) -> bool:
    """[4.6: mm/mmap.c anon_vma_compatible] a directly below b, flags equal but for R/W/X."""
    return (a.end == b.start and a.file == b.file
            and not (a.flags ^ b.flags) & ~(RWX | VM_SOFTDIRTY)
            and b.pgoff == a.pgoff + ((b.start - a.start) >> PAGE_SHIFT))


@step_rule("VMA-R9", "touch faults as 4.6 does: SIGSEGV outside VMAs, anon_vma on write",
           ops=["touch"], needs=[Capability.TOUCH])
def touch_rule(step: VmaStep) -> Iterator[str]:
    """[4.6: arch/x86/mm/fault.c __do_page_fault, access_error; mm/rmap.c anon_vma_prepare;
    mm/mmap.c find_mergeable_anon_vma, acct_stack_growth] A write fault in a private VMA
    gives it an anon_vma, reusing a compatible neighbour's (the next one first); a stack grows
    only within RLIMIT_STACK."""
    addr, write = u64(step.args["addr"]), bool(step.args["write"])
    before, after = step.before, step.after
    vma = before.find(addr)
    if addr >= TASK_SIZE or vma is None or (vma.start > addr
                                            and not vma.flags & VM_GROWSDOWN):
        if step.result != EFAULT:
            yield f"a fault at unmapped {addr:#x} returned {describe(step.result)}, not -EFAULT"
        return
    if vma.start > addr:
        size = vma.end - (addr & PAGE_MASK) - PAGE_SIZE
        now = after.find(addr)
        if size > step.pconf.rlimit_stack and (step.result != EFAULT or now is None
                                               or now.start != vma.start):
            yield (f"growing {show(vma)} down to {addr:#x} exceeds RLIMIT_STACK "
                   f"({step.pconf.rlimit_stack:#x}), yet touch returned "
                   f"{describe(step.result)}")
        return
    if write and not vma.flags & VM_WRITE:
        if step.result != EFAULT:
            yield f"a write to read-only {show(vma)} returned {describe(step.result)}"
        return
    if step.result != 0 or not write or vma.flags & VM_SHARED:
        return
    now = after.find(addr)
    if now is None or now.anon_vma is None:
        yield f"after a write fault at {addr:#x} the VMA has no anon_vma"
        return
    if vma.anon_vma is not None:
        if now.anon_vma != vma.anon_vma:
            yield f"the anon_vma changed from {vma.anon_vma} to {now.anon_vma}"
        return
    i = before.vmas.index(vma)
    nxt = before.vmas[i + 1] if i + 1 < len(before.vmas) else None
    prev = before.vmas[i - 1] if i else None
    # reusable_anon_vma: only a neighbour whose chain is singular (not from dup_mm)
    if nxt is not None and nxt.anon_vma is not None and nxt.anon_vma not in step.inherited \
            and anon_vma_compatible(vma, nxt):
        wanted: int | None = nxt.anon_vma
    elif prev is not None and prev.anon_vma is not None and prev.anon_vma not in \
            step.inherited and anon_vma_compatible(prev, vma):
        wanted = prev.anon_vma
    else:
        wanted = None
    used = {v.anon_vma for v in before.vmas}
    if wanted is not None and now.anon_vma != wanted:
        yield f"{show(now)} should share its neighbour's anon_vma {wanted}"
    if wanted is None and now.anon_vma in used:
        yield f"{show(now)} took anon_vma {now.anon_vma}, which another VMA already had"



# ---------------------------------------------------------------------------------------------
# VMA-R10: dup_mm
# ---------------------------------------------------------------------------------------------


def fork_refusal(step: VmaStep) -> VmaView | None:
    """The VMA whose VM_ACCOUNT charge 4.6 refuses when forking ``step.before``, or None.

    [4.6: kernel/fork.c dup_mmap; mm/util.c __vm_enough_memory, vm_commit_limit] Every charge
    goes through the parent's mm: the test adds the request to the parent's committed total
    (plus what the copies before it charged) and reads the parent's total_vm; a process
    without CAP_SYS_ADMIN keeps the admin reserve."""
    view, pconf = step.before, step.pconf
    admin = pconf.admin_reserve_kbytes >> (PAGE_SHIFT - 10)
    committed = view.committed
    for vma in view.vmas:
        if vma.flags & VM_DONTCOPY or not vma.flags & VM_ACCOUNT:
            continue
        committed += vma.pages
        if view.overcommit_memory == OVERCOMMIT_ALWAYS:
            continue
        if view.overcommit_memory == OVERCOMMIT_GUESS:
            free = pconf.guess_free_pages
            if free > pconf.totalreserve_pages and \
                    free - pconf.totalreserve_pages - admin > vma.pages:
                continue
            return vma
        if view.overcommit_kbytes:
            limit = view.overcommit_kbytes >> (PAGE_SHIFT - 10)
        else:
            limit = pconf.totalram_pages * view.overcommit_ratio // 100
        allowed = limit + pconf.total_swap_pages - admin - min(
            view.total_vm // 32, pconf.user_reserve_kbytes >> (PAGE_SHIFT - 10))
        if max(committed, 0) >= allowed:
            return vma
    return None


def expected_child(before: MmView) -> MmView:
    """The child's view 4.6's dup_mmap leaves, anon_vma identities aside (the caller checks
    those by sharing: numbering is free in contract mode) and ``committed`` counting only the
    child's own charges."""
    copied = tuple(v for v in before.vmas if not v.flags & VM_DONTCOPY)
    dropped = vm_class_sums(tuple(v for v in before.vmas if v.flags & VM_DONTCOPY))
    held = {v.file for v in copied}
    only_dropped = {v.file for v in before.vmas if v.flags & VM_DONTCOPY} - held
    files = tuple(f for f in before.files if not (f.shmem and f.ident in only_dropped))
    vmas = tuple(attrs.evolve(v, flags=v.flags & VM_LOCKED_CLEAR_MASK) for v in copied)
    return attrs.evolve(
        before, vmas=vmas, files=files, map_count=len(vmas),
        total_vm=before.total_vm - dropped["total_vm"],
        data_vm=before.data_vm - dropped["data_vm"],
        exec_vm=before.exec_vm - dropped["exec_vm"],
        stack_vm=before.stack_vm - dropped["stack_vm"], locked_vm=0,
        committed=sum(v.pages for v in vmas if v.flags & VM_ACCOUNT)
        + sum(f.charged for f in files))


def field_differences(want: MmView, got: MmView, skip: frozenset[str]) -> Iterator[str]:
    """Every counter, layout and sysctl field that differs (VMAs are compared separately)."""
    for field in attrs.fields(MmView):
        if field.name in skip or field.name == "vmas":
            continue
        w, g = getattr(want, field.name), getattr(got, field.name)
        if w != g:
            yield f"{field.name} is {g!r}, expected {w!r}"


def _without_anon(vmas: tuple[VmaView, ...]) -> list[VmaView]:
    return [attrs.evolve(v, anon_vma=None) for v in vmas]


@step_rule("VMA-R10", "dup_mm copies as dup_mmap does and leaves the parent unchanged",
           ops=["dup_mm"], needs=[Capability.FORK])
def dup_mm_rule(step: VmaStep) -> Iterator[str]:
    """[4.6: kernel/fork.c dup_mm, dup_mmap; mm/rmap.c anon_vma_fork] The child copies every
    VMA but the VM_DONTCOPY ones, unlocked, each with an anon_vma of its own where the
    parent's had one; -ENOMEM only when a VM_ACCOUNT charge on the parent's mm is refused."""
    before, after, child = step.before, step.after, step.child
    if after != before:
        changed = list(field_differences(before, after, frozenset()))
        if after.vmas != before.vmas:
            changed.insert(0, "VMAs: " + _list_diff(before.vmas, after.vmas))
        yield "the parent changed: " + "; ".join(changed)
    strict = Capability.OVERCOMMIT in step.impl.capabilities
    refused = fork_refusal(step)
    if step.result < 0:
        if step.result != ENOMEM:
            yield f"returned {describe(step.result)}; fork's VMA half fails only with -ENOMEM"
        elif strict and refused is None:
            yield "returned -ENOMEM, but 4.6 grants every VM_ACCOUNT charge " \
                  f"(overcommit_memory {before.overcommit_memory}, committed {before.committed})"
        elif not strict and (before.overcommit_memory == OVERCOMMIT_ALWAYS or not any(
                v.flags & VM_ACCOUNT for v in before.vmas)):
            yield "returned -ENOMEM with nothing 4.6 could refuse to charge"
        return
    if strict and refused is not None:
        yield (f"returned a child, but 4.6 refuses the charge of {show(refused)} "
               f"(overcommit_memory {before.overcommit_memory}, committed {before.committed})")
    if child is None:
        yield "returned neither a child nor an errno"
        return
    want = expected_child(before)
    if _without_anon(child.vmas) != _without_anon(want.vmas):
        yield "the child's VMAs are not the parent's copied: " + _list_diff(
            _without_anon(want.vmas), _without_anon(child.vmas))
        return
    seen: dict[int, VmaView] = {}
    for theirs, mine in zip(want.vmas, child.vmas, strict=True):
        if (theirs.anon_vma is None) != (mine.anon_vma is None):
            yield (f"the child's {show(mine)} " + ("has no anon_vma, the parent's copy had one"
                                                   if mine.anon_vma is None else
                                                   "has an anon_vma, the parent's had none"))
        elif mine.anon_vma is not None:
            if mine.anon_vma in seen:
                yield (f"the child's {show(seen[mine.anon_vma])} and {show(mine)} share an "
                       "anon_vma: anon_vma_fork gives every copy its own")
            seen[mine.anon_vma] = mine
    skip = frozenset() if strict else frozenset({"committed"})
    yield from (f"the child's {problem}" for problem in field_differences(want, child, skip))
