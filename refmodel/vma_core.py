"""The address space's machinery: VMAs, lookup, merge, split, unmap, placement and accounting.

The functions here are 4.6's functions of the same names, taking the ``Mm`` first where 4.6
takes ``struct mm_struct *``.  VMAs live in one list sorted by address, searched with bisect;
4.6's rbtree, vm_next/vm_prev links, vmacache and rb_subtree_gap are all ways of answering the
same questions faster, and none of them is observable [Simplified: a sorted list stands for the
rbtree and the vm_next list; the free-gap search walks gaps in address order from the bisect
point instead of pruning with rb_subtree_gap, which gives the same answer].

Unsigned arithmetic: arguments arrive reduced to 64 bits, and every sum that could wrap in C is
wrapped with ``u64`` where 4.6 relies on the wrap.
"""

from __future__ import annotations

import bisect
from typing import Final

import attrs

from specs.errno import Errno
from specs.machine import PAGE_SHIFT, PAGE_SIZE
from specs.vma import (
    MAP_32BIT,
    MAP_32BIT_END,
    MAP_32BIT_START,
    MAP_FIXED,
    OVERCOMMIT_ALWAYS,
    OVERCOMMIT_GUESS,
    PAGE_MASK,
    TASK_SIZE,
    TASK_UNMAPPED_BASE,
    ULONG_MASK,
    VM_ACCOUNT,
    VM_DONTCOPY,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_LOCKED_CLEAR_MASK,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_SPECIAL,
    VM_STACK,
    VM_WRITE,
    FileView,
    ProcessConfig,
    VmaView,
    VmCommit,
    page_align,
)

ENOMEM: Final = -Errno.ENOMEM
EINVAL: Final = -Errno.EINVAL
EPERM: Final = -Errno.EPERM


def u64(value: int) -> int:
    """The value as a C unsigned long holds it."""
    return value & ULONG_MASK


@attrs.define(eq=False)
class ShmemHolders:
    """How many mms of a machine-wide counter hold one shmem object: 4.6 charges the object
    once, on its inode, and releases the charge when its last mapping goes [4.6: mm/shmem.c
    shmem_evict_inode].  Only spaces sharing a ``VmCommit`` make one; a standalone child
    charges its own copy instead (``dup_mmap``)."""

    mms: int = 1


@attrs.define(eq=False)
class File:
    """A struct file: an opened regular file, or the shmem object behind a shared anonymous
    mapping.  ``users`` counts the VMAs holding it (get_file/fput from the VMAs)."""

    ident: int
    fd: int | None
    size: int
    readable: bool
    writable: bool
    shmem: bool
    #: [4.6: mm/shmem.c shmem_acct_size] pages charged when the shmem object was created
    charged: int = 0
    users: int = 0
    #: the mms sharing this object's charge, when they share a VmCommit (else None)
    holders: ShmemHolders | None = None

    def view(self) -> FileView:
        return FileView(ident=self.ident, fd=self.fd, size=self.size, readable=self.readable,
                        writable=self.writable, shmem=self.shmem, charged=self.charged)


@attrs.define(eq=False)
class Vma:
    """A struct vm_area_struct; identity matters (4.6 code keeps pointers across calls)."""

    start: int
    end: int
    flags: int
    pgoff: int
    file: File | None
    #: anon_vma identity (creation-order number) or None
    anon_vma: int | None = None
    #: the anon_vma_chain also links the parent's anon_vmas: fork's anon_vma_fork made this
    #: VMA (or the VMA it was split or cloned from), so the chain is not singular
    inherited: bool = False

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    def is_anonymous(self) -> bool:
        """vma_is_anonymous: no vm_ops, which here means no file (shmem VMAs have a file)."""
        return self.file is None

    def view(self) -> VmaView:
        return VmaView(start=self.start, end=self.end, flags=self.flags, pgoff=self.pgoff,
                       file=None if self.file is None else self.file.ident,
                       anon_vma=self.anon_vma)


def _end(vma: Vma) -> int:
    return vma.end


def _start(vma: Vma) -> int:
    return vma.start


@attrs.define(eq=False)
class Mm:
    """struct mm_struct, the fields the model keeps."""

    pconf: ProcessConfig
    vmas: list[Vma] = attrs.Factory(list)
    total_vm: int = 0
    data_vm: int = 0
    exec_vm: int = 0
    stack_vm: int = 0
    locked_vm: int = 0
    #: vm_committed_as and the overcommit sysctls: private, or the machine's
    commit: VmCommit = attrs.Factory(VmCommit)
    start_brk: int = 0
    brk: int = 0
    end_data: int = 0
    mmap_base: int = 0
    mmap_legacy_base: int = TASK_UNMAPPED_BASE
    files: dict[int, File] = attrs.Factory(dict)
    fds: dict[int, File] = attrs.Factory(dict)
    next_anon_vma: int = 1
    next_file: int = 1

    @property
    def committed(self) -> int:
        """vm_committed_as, in pages."""
        return self.commit.pages

    @committed.setter
    def committed(self, pages: int) -> None:
        self.commit.pages = pages

    @property
    def sysctl(self) -> dict[str, int]:
        """The sysctls in force (the machine's when the counter is shared)."""
        return self.commit.sysctl

    @property
    def map_count(self) -> int:
        return len(self.vmas)

    @property
    def max_map_count(self) -> int:
        return self.sysctl["max_map_count"]

    # -- lookup [4.6: mm/mmap.c find_vma, find_vma_prev, find_vma_intersection] ----------------

    def find_index(self, addr: int) -> int:
        """Index of the lowest VMA with end > addr (len(vmas) if none)."""
        return bisect.bisect_right(self.vmas, addr, key=_end)

    def index(self, vma: Vma) -> int:
        """Position of a linked VMA."""
        i = bisect.bisect_left(self.vmas, vma.start, key=_start)
        assert self.vmas[i] is vma, "VMA not linked"
        return i

    def find_vma(self, addr: int) -> Vma | None:
        i = self.find_index(addr)
        return self.vmas[i] if i < len(self.vmas) else None

    def find_vma_intersection(self, start: int, end: int) -> Vma | None:
        vma = self.find_vma(start)
        if vma is not None and end <= vma.start:
            return None
        return vma

    def next_of(self, vma: Vma) -> Vma | None:
        i = self.index(vma) + 1
        return self.vmas[i] if i < len(self.vmas) else None

    def prev_of(self, vma: Vma) -> Vma | None:
        i = self.index(vma)
        return self.vmas[i - 1] if i else None

    def prev_for(self, addr: int) -> Vma | None:
        """The VMA find_vma_links reports as prev for a free range starting at addr."""
        i = self.find_index(addr)
        return self.vmas[i - 1] if i else None

    def overlaps(self, start: int, end: int) -> bool:
        """find_vma_links' -ENOMEM: some VMA intersects [start, end)."""
        return self.find_vma_intersection(start, end) is not None

    @property
    def highest_vm_end(self) -> int:
        return self.vmas[-1].end if self.vmas else 0

    # -- linking ---------------------------------------------------------------------------------

    def link(self, vma: Vma) -> None:
        """vma_link / __insert_vm_struct: map_count follows len(vmas)."""
        i = bisect.bisect_left(self.vmas, vma.start, key=_start)
        self.vmas.insert(i, vma)
        if vma.file is not None:
            vma.file.users += 1

    def unlink(self, vma: Vma) -> None:
        """Detach and free one VMA (the file reference is dropped with it)."""
        del self.vmas[self.index(vma)]
        self.fput(vma.file)

    def fput(self, file: File | None) -> None:
        """Drop a VMA's file reference; the last one evicts a shmem object
        [4.6: mm/shmem.c shmem_evict_inode, shmem_unacct_size]."""
        if file is None:
            return
        file.users -= 1
        if file.shmem and file.users == 0:
            holders = file.holders
            if holders is not None:
                holders.mms -= 1
            if holders is None or holders.mms == 0:
                vm_unacct_memory(self, file.charged)
            del self.files[file.ident]

    def new_anon_vma(self) -> int:
        ident = self.next_anon_vma
        self.next_anon_vma += 1
        return ident

    def new_file(self, *, fd: int | None, size: int, readable: bool, writable: bool,
                 shmem: bool) -> File:
        file = File(ident=self.next_file, fd=fd, size=size, readable=readable,
                    writable=writable, shmem=shmem)
        self.next_file += 1
        self.files[file.ident] = file
        return file


# ---------------------------------------------------------------------------------------------
# Accounting [4.6: mm/mmap.c vm_stat_account, may_expand_vm; mm/util.c __vm_enough_memory]
# ---------------------------------------------------------------------------------------------


def is_exec_mapping(flags: int) -> bool:
    return (flags & (VM_EXEC | VM_WRITE | VM_STACK)) == VM_EXEC


def is_stack_mapping(flags: int) -> bool:
    return (flags & VM_STACK) == VM_STACK


def is_data_mapping(flags: int) -> bool:
    return (flags & (VM_WRITE | VM_SHARED | VM_STACK)) == VM_WRITE


def vm_stat_account(mm: Mm, flags: int, npages: int) -> None:
    """total_vm always; then the first class that matches: exec, stack, data."""
    mm.total_vm += npages
    if is_exec_mapping(flags):
        mm.exec_vm += npages
    elif is_stack_mapping(flags):
        mm.stack_vm += npages
    elif is_data_mapping(flags):
        mm.data_vm += npages


def may_expand_vm(mm: Mm, flags: int, npages: int) -> bool:
    """RLIMIT_AS on total_vm.  RLIMIT_DATA only warns in 4.6 (ignore_rlimit_data is true)."""
    del flags  # the data-limit branch only prints a warning in 4.6
    return mm.total_vm + npages <= mm.pconf.rlimit_as >> PAGE_SHIFT


def mlock_limit_pages(mm: Mm) -> int:
    """RLIMIT_MEMLOCK in pages; the process lacks CAP_IPC_LOCK."""
    return mm.pconf.rlimit_memlock >> PAGE_SHIFT


def vm_commit_limit(mm: Mm) -> int:
    kbytes = mm.sysctl["overcommit_kbytes"]
    if kbytes:
        allowed = kbytes >> (PAGE_SHIFT - 10)
    else:
        allowed = mm.pconf.totalram_pages * mm.sysctl["overcommit_ratio"] // 100
    return allowed + mm.pconf.total_swap_pages


def vm_enough_memory(mm: Mm, pages: int) -> int:
    """security_vm_enough_memory_mm -> __vm_enough_memory, for a process without
    CAP_SYS_ADMIN.  The charge is added first and taken back on failure."""
    mm.committed += pages
    mode = mm.sysctl["overcommit_memory"]
    admin = mm.pconf.admin_reserve_kbytes >> (PAGE_SHIFT - 10)
    if mode == OVERCOMMIT_ALWAYS:
        return 0
    if mode == OVERCOMMIT_GUESS:
        free = mm.pconf.guess_free_pages
        if free > mm.pconf.totalreserve_pages:
            free -= mm.pconf.totalreserve_pages + admin
            if free > pages:
                return 0
    else:
        allowed = vm_commit_limit(mm) - admin
        allowed -= min(mm.total_vm // 32, mm.pconf.user_reserve_kbytes >> (PAGE_SHIFT - 10))
        if max(mm.committed, 0) < allowed:
            return 0
    mm.committed -= pages
    return ENOMEM


def vm_unacct_memory(mm: Mm, pages: int) -> None:
    mm.committed -= pages


# ---------------------------------------------------------------------------------------------
# Merging [4.6: mm/mmap.c vma_merge, vma_adjust, is_mergeable_vma, is_mergeable_anon_vma]
# ---------------------------------------------------------------------------------------------


def is_mergeable_vma(vma: Vma, file: File | None, flags: int) -> bool:
    """Flags equal but for VM_SOFTDIRTY, and the same file.  No model file has a ->close and
    there is no userfaultfd, so those two tests always pass."""
    return not (vma.flags ^ flags) & ~VM_SOFTDIRTY and vma.file is file


def chain_singular(vma: Vma) -> bool:
    """list_is_singular(&vma->anon_vma_chain): the VMA has an anon_vma of its own and no
    chain entries inherited through fork."""
    return vma.anon_vma is not None and not vma.inherited


def is_mergeable_anon_vma(a1: int | None, a2: int | None, vma: Vma | None) -> bool:
    """A missing anon_vma is compatible only with a VMA whose chain is singular."""
    if (a1 is None or a2 is None) and (vma is None or chain_singular(vma)):
        return True
    return a1 == a2


def can_vma_merge_before(vma: Vma, flags: int, anon_vma: int | None, file: File | None,
                         pgoff: int) -> bool:
    return (is_mergeable_vma(vma, file, flags)
            and is_mergeable_anon_vma(anon_vma, vma.anon_vma, vma) and vma.pgoff == pgoff)


def can_vma_merge_after(vma: Vma, flags: int, anon_vma: int | None, file: File | None,
                        pgoff: int) -> bool:
    return (is_mergeable_vma(vma, file, flags)
            and is_mergeable_anon_vma(anon_vma, vma.anon_vma, vma)
            and vma.pgoff + vma.pages == pgoff)


def vma_merge(mm: Mm, prev: Vma | None, addr: int, end: int, flags: int,
              anon_vma: int | None, file: File | None, pgoff: int) -> Vma | None:
    """The eight cases of 4.6's comment: 1-3 fill a hole (mmap, brk, mremap), 4-8 change
    part or all of an existing VMA (mprotect).  Returns the VMA now covering [addr, end)."""
    pglen = (end - addr) >> PAGE_SHIFT
    if flags & VM_SPECIAL:
        return None
    first = mm.vmas[0] if mm.vmas else None
    nxt = mm.next_of(prev) if prev is not None else first
    area = nxt
    if nxt is not None and nxt.end == end:  # cases 6, 7, 8
        nxt = mm.next_of(nxt)

    if (prev is not None and prev.end == addr
            and can_vma_merge_after(prev, flags, anon_vma, file, pgoff)):
        if (nxt is not None and end == nxt.start
                and can_vma_merge_before(nxt, flags, anon_vma, file, pgoff + pglen)
                and is_mergeable_anon_vma(prev.anon_vma, nxt.anon_vma, None)):
            vma_adjust(mm, prev, prev.start, nxt.end, prev.pgoff)  # cases 1, 6
        else:
            vma_adjust(mm, prev, prev.start, end, prev.pgoff)  # cases 2, 5, 7
        return prev

    if (nxt is not None and end == nxt.start
            and can_vma_merge_before(nxt, flags, anon_vma, file, pgoff + pglen)):
        if prev is not None and addr < prev.end:  # case 4
            vma_adjust(mm, prev, prev.start, addr, prev.pgoff)
        else:  # cases 3, 8
            assert area is not None
            vma_adjust(mm, area, addr, nxt.end, nxt.pgoff - pglen)
        return area
    return None


def vma_adjust(mm: Mm, vma: Vma, start: int, end: int, pgoff: int,
               insert: Vma | None = None) -> None:
    """Move vma's bounds, shifting, absorbing or inserting its neighbour as needed; the
    expanding VMA inherits the shrinking one's anon_vma when it had none."""
    while True:
        nxt = mm.next_of(vma)
        remove_next = 0
        adjust_next = 0
        if nxt is not None and insert is None:
            exporter = importer = None
            if end >= nxt.end:  # vma swallows next (and maybe the one after: case 6)
                remove_next = 1 + (end > nxt.end)
                end = nxt.end
                exporter, importer = nxt, vma
            elif end > nxt.start:  # case 5: boundary moves up
                adjust_next = (end - nxt.start) >> PAGE_SHIFT
                exporter, importer = nxt, vma
            elif end < vma.end:  # case 4: boundary moves down
                adjust_next = -((vma.end - end) >> PAGE_SHIFT)
                exporter, importer = vma, nxt
            if (exporter is not None and importer is not None
                    and exporter.anon_vma is not None and importer.anon_vma is None):
                importer.anon_vma = exporter.anon_vma  # anon_vma_clone copies the chain
                importer.inherited = exporter.inherited
        vma.start = start
        vma.end = end
        vma.pgoff = pgoff
        if adjust_next and nxt is not None:
            nxt.start += adjust_next << PAGE_SHIFT
            nxt.pgoff += adjust_next
        if remove_next and nxt is not None:
            mm.unlink(nxt)
            if remove_next == 2:
                nxt2 = mm.next_of(vma)
                assert nxt2 is not None
                end = nxt2.end
                continue
        elif insert is not None:
            mm.link(insert)
        return


# ---------------------------------------------------------------------------------------------
# Split and unmap [4.6: mm/mmap.c __split_vma, split_vma, do_munmap]
# ---------------------------------------------------------------------------------------------


def __split_vma(mm: Mm, vma: Vma, addr: int, new_below: bool) -> int:
    """The new VMA is the lower part when new_below, else the upper part; both share the
    anon_vma (anon_vma_clone) and the file."""
    new = Vma(start=vma.start, end=vma.end, flags=vma.flags, pgoff=vma.pgoff, file=vma.file,
              anon_vma=vma.anon_vma, inherited=vma.inherited)
    if new_below:
        new.end = addr
        vma_adjust(mm, vma, addr, vma.end, vma.pgoff + ((addr - new.start) >> PAGE_SHIFT), new)
    else:
        new.start = addr
        new.pgoff += (addr - vma.start) >> PAGE_SHIFT
        vma_adjust(mm, vma, vma.start, addr, vma.pgoff, new)
    return 0


def split_vma(mm: Mm, vma: Vma, addr: int, new_below: bool) -> int:
    """Refused at the limit: map_count >= max_map_count (note >=, unlike mmap's >)."""
    if mm.map_count >= mm.max_map_count:
        return ENOMEM
    return __split_vma(mm, vma, addr, new_below)


def do_munmap(mm: Mm, start: int, length: int) -> int:
    """Unmapping nothing succeeds; a split in the middle of one VMA is refused at the limit,
    every other split may take map_count one above it for the moment."""
    if start & ~PAGE_MASK or start > TASK_SIZE or length > TASK_SIZE - start:
        return EINVAL
    length = page_align(length)
    if length == 0:
        return EINVAL
    i = mm.find_index(start)
    if i == len(mm.vmas):
        return 0
    vma = mm.vmas[i]
    prev = mm.vmas[i - 1] if i else None
    end = start + length
    if vma.start >= end:
        return 0
    if start > vma.start:
        if end < vma.end and mm.map_count >= mm.max_map_count:
            return ENOMEM
        __split_vma(mm, vma, start, False)
        prev = vma
    last = mm.find_vma(end)
    if last is not None and end > last.start:
        __split_vma(mm, last, end, True)
    first = mm.index(prev) + 1 if prev is not None else 0
    stop = first
    while stop < len(mm.vmas) and mm.vmas[stop].start < end:
        stop += 1
    doomed = mm.vmas[first:stop]
    del mm.vmas[first:stop]
    nr_accounted = 0
    for gone in doomed:
        if gone.flags & VM_LOCKED:
            mm.locked_vm -= gone.pages
        if gone.flags & VM_ACCOUNT:
            nr_accounted += gone.pages
        vm_stat_account(mm, gone.flags, -gone.pages)
        mm.fput(gone.file)
    vm_unacct_memory(mm, nr_accounted)
    return 0


def count_vma_pages_range(mm: Mm, addr: int, end: int) -> int:
    """Pages of [addr, end) already mapped (what MAP_FIXED would replace)."""
    total = 0
    for i in range(mm.find_index(addr), len(mm.vmas)):
        vma = mm.vmas[i]
        if vma.start >= end:
            break
        total += (min(end, vma.end) - max(addr, vma.start)) >> PAGE_SHIFT
    return total


# ---------------------------------------------------------------------------------------------
# Placement [4.6: mm/mmap.c get_unmapped_area, unmapped_area, unmapped_area_topdown;
# arch/x86/kernel/sys_x86_64.c arch_get_unmapped_area, arch_get_unmapped_area_topdown]
# ---------------------------------------------------------------------------------------------


def _gap_start(mm: Mm, i: int) -> int:
    return mm.vmas[i - 1].end if i else 0


def unmapped_area(mm: Mm, length: int, low: int, high: int) -> int:
    """Bottom-up: the lowest gap that fits, clipped to low."""
    if high < length:
        return ENOMEM
    high_limit = high - length
    if low > high_limit:
        return ENOMEM
    low_limit = low + length
    for i in range(bisect.bisect_left(mm.vmas, low_limit, key=_start), len(mm.vmas)):
        gap_start, gap_end = _gap_start(mm, i), mm.vmas[i].start
        if gap_start > high_limit:
            return ENOMEM
        if gap_end - gap_start >= length:
            return max(gap_start, low)
    if mm.highest_vm_end > high_limit:
        return ENOMEM
    return max(mm.highest_vm_end, low)


def unmapped_area_topdown(mm: Mm, length: int, low: int, high: int) -> int:
    """Top-down: the space just below high if nothing is mapped above, else the highest gap
    that fits, taken at its top."""
    if high < length:
        return ENOMEM
    high_limit = high - length
    if low > high_limit:
        return ENOMEM
    low_limit = low + length
    if mm.highest_vm_end <= high_limit:
        return high - length
    for i in range(bisect.bisect_right(mm.vmas, high_limit, key=_end), -1, -1):
        if i == len(mm.vmas):
            continue
        gap_start, gap_end = _gap_start(mm, i), mm.vmas[i].start
        if gap_end < low_limit:
            return ENOMEM
        if gap_start <= high_limit and gap_end - gap_start >= length:
            return min(gap_end, high) - length
    return ENOMEM


def _hint_fits(mm: Mm, addr: int, length: int, end: int) -> bool:
    vma = mm.find_vma(addr)
    return end - length >= addr and (vma is None or addr + length <= vma.start)


def arch_get_unmapped_area(mm: Mm, addr: int, length: int, flags: int) -> int:
    """Bottom-up from mmap_legacy_base, or inside the MAP_32BIT window."""
    if flags & MAP_FIXED:
        return addr
    if flags & MAP_32BIT:
        begin, end = MAP_32BIT_START, MAP_32BIT_END
    else:
        begin, end = mm.mmap_legacy_base, TASK_SIZE
    if length > end:
        return ENOMEM
    if addr:
        addr = page_align(addr)
        if _hint_fits(mm, addr, length, end):
            return addr
    return unmapped_area(mm, length, begin, end)


def arch_get_unmapped_area_topdown(mm: Mm, addr0: int, length: int, flags: int) -> int:
    """Hint first, then top-down below mmap_base, then bottom-up as the fallback."""
    if length > TASK_SIZE:
        return ENOMEM
    if flags & MAP_FIXED:
        return addr0
    if not flags & MAP_32BIT:
        if addr0:
            addr = page_align(addr0)
            if _hint_fits(mm, addr, length, TASK_SIZE):
                return addr
        found = unmapped_area_topdown(mm, length, PAGE_SIZE, mm.mmap_base)
        if found >= 0:
            return found
    return arch_get_unmapped_area(mm, addr0, length, flags)


def get_unmapped_area(mm: Mm, addr: int, length: int, flags: int) -> int:
    """No model file has its own get_unmapped_area (regular files and 4.6's shmem use the
    mm's), so the file does not matter here.  Returns an address or -errno."""
    if length > TASK_SIZE:
        return ENOMEM
    addr = arch_get_unmapped_area_topdown(mm, addr, length, flags)
    if addr < 0:
        return addr
    if addr > TASK_SIZE - length:
        return ENOMEM
    if addr & ~PAGE_MASK:
        return EINVAL
    return security_mmap_addr(mm, addr)


def security_mmap_addr(mm: Mm, addr: int) -> int:
    """[4.6: security/commoncap.c cap_mmap_addr] below mmap_min_addr needs CAP_SYS_RAWIO,
    which the modelled process lacks."""
    return EPERM if addr < mm.pconf.mmap_min_addr else addr


# ---------------------------------------------------------------------------------------------
# anon_vma and stack growth [4.6: mm/rmap.c anon_vma_prepare; mm/mmap.c find_mergeable_anon_vma,
# expand_downwards, expand_stack, acct_stack_growth]
# ---------------------------------------------------------------------------------------------


def anon_vma_compatible(a: Vma, b: Vma) -> bool:
    """Adjacent, same file, flags equal but for R/W/X/SOFTDIRTY, pgoff continuous."""
    return (a.end == b.start and a.file is b.file
            and not (a.flags ^ b.flags) & ~(0x7 | VM_SOFTDIRTY)
            and b.pgoff == a.pgoff + ((b.start - a.start) >> PAGE_SHIFT))


def find_mergeable_anon_vma(mm: Mm, vma: Vma) -> int | None:
    """Reuse a compatible neighbour's anon_vma, next first, so a later mprotect can merge."""
    nxt = mm.next_of(vma)
    if nxt is not None and anon_vma_compatible(vma, nxt) and chain_singular(nxt):
        return nxt.anon_vma
    prev = mm.prev_of(vma)
    if prev is not None and anon_vma_compatible(prev, vma) and chain_singular(prev):
        return prev.anon_vma
    return None


def anon_vma_prepare(mm: Mm, vma: Vma) -> None:
    if vma.anon_vma is None:
        found = find_mergeable_anon_vma(mm, vma)
        vma.anon_vma = found if found is not None else mm.new_anon_vma()


def acct_stack_growth(mm: Mm, vma: Vma, size: int, grow: int) -> int:
    if not may_expand_vm(mm, vma.flags, grow):
        return ENOMEM
    actual = size - PAGE_SIZE if size and vma.flags & VM_GROWSDOWN else size
    if actual > mm.pconf.rlimit_stack:
        return ENOMEM
    if vma.flags & VM_LOCKED and mm.locked_vm + grow > mlock_limit_pages(mm):
        return ENOMEM
    return vm_enough_memory(mm, grow)


def expand_downwards(mm: Mm, vma: Vma, address: int) -> int:
    address &= PAGE_MASK
    if security_mmap_addr(mm, address) < 0:
        return EPERM
    anon_vma_prepare(mm, vma)
    if address >= vma.start:
        return 0
    size = vma.end - address
    grow = (vma.start - address) >> PAGE_SHIFT
    if grow > vma.pgoff:
        return ENOMEM
    error = acct_stack_growth(mm, vma, size, grow)
    if error:
        return error
    if vma.flags & VM_LOCKED:
        mm.locked_vm += grow
    vm_stat_account(mm, vma.flags, grow)
    vma.start = address
    vma.pgoff -= grow
    return 0


def expand_stack(mm: Mm, vma: Vma, address: int) -> int:
    """x86 stacks grow down; abutting a VMA that is not a stack is refused."""
    address &= PAGE_MASK
    prev = mm.prev_of(vma)
    if prev is not None and prev.end == address and not prev.flags & VM_GROWSDOWN:
        return ENOMEM
    return expand_downwards(mm, vma, address)


# ---------------------------------------------------------------------------------------------
# fork [4.6: kernel/fork.c dup_mm, dup_mmap; mm/rmap.c anon_vma_fork]
# ---------------------------------------------------------------------------------------------


def dup_mmap(old: Mm, shared: bool = False) -> Mm | int:
    """The child's mm, or -ENOMEM with ``old`` as it was.

    The counters come over first and a VM_DONTCOPY VMA is taken back out of them; each
    VM_ACCOUNT VMA is charged through the parent's mm (4.6's call passes oldmm), so the test
    sees the parent's commitment plus what the child has charged so far, and the parent's
    total_vm.  With ``shared`` the child shares the parent's VmCommit (the machine-wide
    counter of a composed kernel): the charges stay, and a refused one takes back those made
    before it; each shmem object the child still maps is held by one more mm.
    [Simplified: without ``shared`` (a standalone space) vm_committed_as is per mm, so the
    parent gets its committed back once the test is done and the child's starts from its own
    VM_ACCOUNT VMAs and the shmem objects it holds.]  A copy of a VMA with an anon_vma gets
    a fresh one whose chain also holds the parent's (anon_vma_fork), numbered in VMA order
    in the child.
    [Simplified: anon_vma_clone's reuse of an anon_vma left with degree < 2 needs the other
    processes' VMAs, which one mm does not see; every copy gets a new anon_vma.]"""
    commit = old.commit if shared else VmCommit(sysctl=dict(old.sysctl))
    mm = Mm(pconf=old.pconf, total_vm=old.total_vm, data_vm=old.data_vm,
            exec_vm=old.exec_vm, stack_vm=old.stack_vm, start_brk=old.start_brk,
            brk=old.brk, end_data=old.end_data, mmap_base=old.mmap_base,
            mmap_legacy_base=old.mmap_legacy_base, commit=commit, next_file=old.next_file)
    for ident, file in old.files.items():
        mm.files[ident] = File(ident=file.ident, fd=file.fd, size=file.size,
                               readable=file.readable, writable=file.writable,
                               shmem=file.shmem, charged=file.charged)
    mm.fds = {fd: mm.files[file.ident] for fd, file in old.fds.items()}
    committed = old.committed
    charged = 0
    for vma in old.vmas:
        if vma.flags & VM_DONTCOPY:
            vm_stat_account(mm, vma.flags, -vma.pages)
            continue
        if vma.flags & VM_ACCOUNT:
            if vm_enough_memory(old, vma.pages):
                old.committed = committed
                return ENOMEM
            charged += vma.pages
        copy = Vma(start=vma.start, end=vma.end, flags=vma.flags & VM_LOCKED_CLEAR_MASK,
                   pgoff=vma.pgoff, file=None if vma.file is None else mm.files[vma.file.ident])
        if vma.anon_vma is not None:
            copy.anon_vma = mm.new_anon_vma()
            copy.inherited = True
        mm.link(copy)
    for ident in [i for i, f in mm.files.items() if f.shmem and not f.users]:
        del mm.files[ident]  # only a VM_DONTCOPY VMA held it
    if shared:
        for ident, file in mm.files.items():
            if file.shmem:
                theirs = old.files[ident]
                if theirs.holders is None:
                    theirs.holders = ShmemHolders()
                theirs.holders.mms += 1
                file.holders = theirs.holders
        return mm
    old.committed = committed
    mm.committed = charged + sum(f.charged for f in mm.files.values())
    return mm


def exit_mmap(mm: Mm) -> None:
    """[4.6: mm/mmap.c exit_mmap] every VMA goes, with its VM_ACCOUNT charge and its file
    reference (the last mm holding a shmem object releases the object's charge)."""
    nr_accounted = 0
    doomed, mm.vmas = mm.vmas, []
    for vma in doomed:
        if vma.flags & VM_ACCOUNT:
            nr_accounted += vma.pages
        mm.fput(vma.file)
    vm_unacct_memory(mm, nr_accounted)
    mm.total_vm = mm.data_vm = mm.exec_vm = mm.stack_vm = mm.locked_vm = 0
