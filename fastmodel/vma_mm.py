"""The fast address space's machinery: accounting, merge, split, unmap, placement, anon_vma and
stack growth, as methods of one ``FastMm``.

The decisions are 4.6's and the reference model's, in the same order (the differential tests
in ``tests/fastmodel/test_vma_equivalence.py`` hold the two together); what differs is the
store (:mod:`fastmodel.vma_store`): neighbours through vm_next/vm_prev links instead of index
arithmetic, bounds changed only through ``VmaStore.resize``, a munmap of many VMAs removed a
block slice at a time, and gap searches that skip blocks.  Arguments arrive already reduced to
64 bits; sums that wrap in C are wrapped with ``u64``.
"""

from __future__ import annotations

from typing import Final

from fastmodel.vma_store import FFile, FVma, VmaStore
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
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_SPECIAL,
    VM_STACK,
    VM_WRITE,
    ProcessConfig,
    VmCommit,
    page_align,
)

ENOMEM: Final = -Errno.ENOMEM
EINVAL: Final = -Errno.EINVAL
EPERM: Final = -Errno.EPERM

#: vm_stat_account's classes [4.6: mm/internal.h is_exec_mapping, is_stack_mapping,
#: is_data_mapping]: the bits each looks at and the value they must have.
_EXEC_MASK: Final = VM_EXEC | VM_WRITE | VM_STACK
_DATA_MASK: Final = VM_WRITE | VM_SHARED | VM_STACK
#: anon_vma_compatible ignores R/W/X and VM_SOFTDIRTY [4.6: mm/mmap.c anon_vma_compatible]
_ANON_COMPAT_IGNORED: Final = VM_READ | VM_WRITE | VM_EXEC | VM_SOFTDIRTY


def u64(value: int) -> int:
    return value & ULONG_MASK


def mergeable_anon(a1: int | None, a2: int | None, vma: FVma | None) -> bool:
    """[4.6: mm/mmap.c is_mergeable_anon_vma] a missing anon_vma goes with a VMA whose
    anon_vma_chain is singular: it has an anon_vma and no chain entries from fork."""
    if (a1 is None or a2 is None) and (vma is None or (vma.anon_vma is not None
                                                        and not vma.inherited)):
        return True
    return a1 == a2


def mergeable(vma: FVma, flags: int, anon_vma: int | None, file: FFile | None) -> bool:
    """is_mergeable_vma and is_mergeable_anon_vma together (no ->close, no userfaultfd)."""
    return (not (vma.flags ^ flags) & ~VM_SOFTDIRTY and vma.file is file
            and mergeable_anon(anon_vma, vma.anon_vma, vma))


class FastMm:
    """struct mm_struct over a :class:`VmaStore`."""

    def __init__(self, pconf: ProcessConfig, commit: VmCommit | None = None) -> None:
        self.pconf = pconf
        #: vm_committed_as and the overcommit sysctls: private, or the machine's
        self.commit = commit if commit is not None else VmCommit()
        #: the counter is a composed kernel's, shared with other spaces
        self.shared = commit is not None
        self.vmas = VmaStore()
        self.total_vm = 0
        self.data_vm = 0
        self.exec_vm = 0
        self.stack_vm = 0
        self.locked_vm = 0
        self.start_brk = pconf.start_brk
        self.brk_value = pconf.start_brk
        self.end_data = pconf.start_brk
        self.mmap_base = pconf.mmap_base
        self.mmap_legacy_base = TASK_UNMAPPED_BASE
        self.files: dict[int, FFile] = {}
        self.fds: dict[int, FFile] = {}
        self.next_anon_vma = 1
        self.next_file = 1

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
        return self.vmas.count

    @property
    def max_map_count(self) -> int:
        return self.sysctl["max_map_count"]

    # -- objects ---------------------------------------------------------------------------------

    def link(self, vma: FVma) -> None:
        self.vmas.link(vma)
        if vma.file is not None:
            vma.file.users += 1

    def unlink(self, vma: FVma) -> None:
        self.vmas.unlink(vma)
        self.fput(vma.file)

    def fput(self, file: FFile | None) -> None:
        """The last VMA of a shmem object evicts it and returns its charge
        [4.6: mm/shmem.c shmem_evict_inode, shmem_unacct_size]."""
        if file is None:
            return
        file.users -= 1
        if file.shmem and file.users == 0:
            holders = file.holders
            if holders is not None:
                holders[0] -= 1
            if holders is None or not holders[0]:
                self.committed -= file.charged
            del self.files[file.ident]

    def new_anon_vma(self) -> int:
        ident = self.next_anon_vma
        self.next_anon_vma += 1
        return ident

    def new_file(self, *, fd: int | None, size: int, readable: bool, writable: bool,
                 shmem: bool) -> FFile:
        file = FFile(ident=self.next_file, fd=fd, size=size, readable=readable,
                     writable=writable, shmem=shmem)
        self.next_file += 1
        self.files[file.ident] = file
        return file

    # -- accounting [4.6: mm/mmap.c vm_stat_account, may_expand_vm; mm/util.c] -----------------

    def stat_account(self, flags: int, npages: int) -> None:
        """total_vm, then the first class that matches: exec, stack, data."""
        self.total_vm += npages
        if flags & _EXEC_MASK == VM_EXEC:
            self.exec_vm += npages
        elif flags & VM_STACK == VM_STACK:
            self.stack_vm += npages
        elif flags & _DATA_MASK == VM_WRITE:
            self.data_vm += npages

    def may_expand_vm(self, npages: int) -> bool:
        """RLIMIT_AS; 4.6's RLIMIT_DATA branch only warns."""
        return self.total_vm + npages <= self.pconf.rlimit_as >> PAGE_SHIFT

    def mlock_limit_pages(self) -> int:
        return self.pconf.rlimit_memlock >> PAGE_SHIFT

    def enough_memory(self, pages: int) -> int:
        """[4.6: mm/util.c __vm_enough_memory] for a process without CAP_SYS_ADMIN: 0 with
        the charge taken, or -ENOMEM with nothing taken."""
        self.committed += pages
        mode = self.sysctl["overcommit_memory"]
        pconf = self.pconf
        admin = pconf.admin_reserve_kbytes >> (PAGE_SHIFT - 10)
        if mode == OVERCOMMIT_ALWAYS:
            return 0
        if mode == OVERCOMMIT_GUESS:
            free = pconf.guess_free_pages
            if free > pconf.totalreserve_pages:
                free -= pconf.totalreserve_pages + admin
                if free > pages:
                    return 0
        else:
            kbytes = self.sysctl["overcommit_kbytes"]
            if kbytes:
                allowed = kbytes >> (PAGE_SHIFT - 10)
            else:
                allowed = pconf.totalram_pages * self.sysctl["overcommit_ratio"] // 100
            allowed += pconf.total_swap_pages - admin
            allowed -= min(self.total_vm // 32, pconf.user_reserve_kbytes >> (PAGE_SHIFT - 10))
            if max(self.committed, 0) < allowed:
                return 0
        self.committed -= pages
        return ENOMEM

    # -- merging [4.6: mm/mmap.c vma_merge, vma_adjust] ---------------------------------------

    def vma_merge(self, prev: FVma | None, addr: int, end: int, flags: int,
                  anon_vma: int | None, file: FFile | None, pgoff: int) -> FVma | None:
        """The eight cases: the VMA now covering [addr, end), or None when nothing merged."""
        if flags & VM_SPECIAL:
            return None
        pglen = (end - addr) >> PAGE_SHIFT
        nxt = prev.next if prev is not None else self.vmas.first
        area = nxt
        if nxt is not None and nxt.end == end:  # cases 6, 7, 8: look past the VMA replaced
            nxt = nxt.next
        if (prev is not None and prev.end == addr and mergeable(prev, flags, anon_vma, file)
                and prev.pgoff + prev.pages == pgoff):
            if (nxt is not None and end == nxt.start and mergeable(nxt, flags, anon_vma, file)
                    and nxt.pgoff == pgoff + pglen
                    and mergeable_anon(prev.anon_vma, nxt.anon_vma, None)):
                self.vma_adjust(prev, prev.start, nxt.end, prev.pgoff)  # cases 1, 6
            else:
                self.vma_adjust(prev, prev.start, end, prev.pgoff)  # cases 2, 5, 7
            return prev
        if (nxt is not None and end == nxt.start and mergeable(nxt, flags, anon_vma, file)
                and nxt.pgoff == pgoff + pglen):
            if prev is not None and addr < prev.end:  # case 4
                self.vma_adjust(prev, prev.start, addr, prev.pgoff)
            else:  # cases 3, 8
                assert area is not None
                self.vma_adjust(area, addr, nxt.end, nxt.pgoff - pglen)
            return area
        return None

    def vma_adjust(self, vma: FVma, start: int, end: int, pgoff: int,
                   insert: FVma | None = None) -> None:
        """Move vma's bounds, then shift, remove or insert the neighbour; the importing VMA
        takes the exporter's anon_vma when it had none."""
        store = self.vmas
        while True:
            nxt = vma.next
            remove_next = 0
            adjust_next = 0
            if nxt is not None and insert is None:
                exporter = importer = None
                if end >= nxt.end:
                    remove_next = 2 if end > nxt.end else 1
                    end = nxt.end
                    exporter, importer = nxt, vma
                elif end > nxt.start:
                    adjust_next = (end - nxt.start) >> PAGE_SHIFT
                    exporter, importer = nxt, vma
                elif end < vma.end:
                    adjust_next = -((vma.end - end) >> PAGE_SHIFT)
                    exporter, importer = vma, nxt
                if (exporter is not None and importer is not None
                        and exporter.anon_vma is not None and importer.anon_vma is None):
                    importer.anon_vma = exporter.anon_vma  # anon_vma_clone copies the chain
                    importer.inherited = exporter.inherited
            store.resize(vma, start, end)
            vma.pgoff = pgoff
            if adjust_next and nxt is not None:
                store.resize(nxt, nxt.start + (adjust_next << PAGE_SHIFT), nxt.end)
                nxt.pgoff += adjust_next
            if remove_next and nxt is not None:
                self.unlink(nxt)
                if remove_next == 2:
                    after = vma.next
                    assert after is not None
                    end = after.end
                    continue
            elif insert is not None:
                self.link(insert)
            return

    # -- split and unmap [4.6: mm/mmap.c __split_vma, split_vma, do_munmap] --------------------

    def split_at(self, vma: FVma, addr: int, new_below: bool) -> None:
        """__split_vma: the new VMA is the part below addr when new_below, else above it."""
        new = FVma(start=vma.start, end=vma.end, flags=vma.flags, pgoff=vma.pgoff,
                   file=vma.file, anon_vma=vma.anon_vma, inherited=vma.inherited)
        shift = (addr - vma.start) >> PAGE_SHIFT
        if new_below:
            new.end = addr
            self.vma_adjust(vma, addr, vma.end, vma.pgoff + shift, new)
        else:
            new.start = addr
            new.pgoff += shift
            self.vma_adjust(vma, vma.start, addr, vma.pgoff, new)

    def split_vma(self, vma: FVma, addr: int, new_below: bool) -> int:
        """Refused when map_count >= max_map_count (mmap refuses only above it)."""
        if self.map_count >= self.max_map_count:
            return ENOMEM
        self.split_at(vma, addr, new_below)
        return 0

    def do_munmap(self, start: int, length: int) -> int:
        """Splitting one VMA in the middle is refused at the limit; the other splits may
        leave map_count one above it."""
        if start & ~PAGE_MASK or start > TASK_SIZE or length > TASK_SIZE - start:
            return EINVAL
        length = page_align(length)
        if length == 0:
            return EINVAL
        vma = self.vmas.find_vma(start)
        if vma is None:
            return 0
        prev = vma.prev
        end = start + length
        if vma.start >= end:
            return 0
        if start > vma.start:
            if end < vma.end and self.map_count >= self.max_map_count:
                return ENOMEM
            self.split_at(vma, start, False)
            prev = vma
        last = self.vmas.find_vma(end)
        if last is not None and end > last.start:
            self.split_at(last, end, True)
        first = prev.next if prev is not None else self.vmas.first
        if first is None or first.start >= end:
            return 0
        nr_accounted = 0
        for gone in self.vmas.unlink_run(first, end):
            pages = gone.pages
            if gone.flags & VM_LOCKED:
                self.locked_vm -= pages
            if gone.flags & VM_ACCOUNT:
                nr_accounted += pages
            self.stat_account(gone.flags, -pages)
            self.fput(gone.file)
        self.committed -= nr_accounted
        return 0

    def count_vma_pages_range(self, addr: int, end: int) -> int:
        """Pages of [addr, end) that are mapped."""
        total = 0
        vma = self.vmas.find_vma(addr)
        while vma is not None and vma.start < end:
            total += (min(end, vma.end) - max(addr, vma.start)) >> PAGE_SHIFT
            vma = vma.next
        return total

    # -- placement [4.6: mm/mmap.c get_unmapped_area; arch/x86/kernel/sys_x86_64.c] ----------

    def _hint_fits(self, addr: int, length: int, end: int) -> bool:
        vma = self.vmas.find_vma(addr)
        return end - length >= addr and (vma is None or addr + length <= vma.start)

    def _bottom_up(self, addr: int, length: int, flags: int) -> int:
        """arch_get_unmapped_area: from mmap_legacy_base, or in the MAP_32BIT window."""
        if flags & MAP_FIXED:
            return addr
        if flags & MAP_32BIT:
            begin, end = MAP_32BIT_START, MAP_32BIT_END
        else:
            begin, end = self.mmap_legacy_base, TASK_SIZE
        if length > end:
            return ENOMEM
        if addr:
            addr = page_align(addr)
            if self._hint_fits(addr, length, end):
                return addr
        found = self.vmas.unmapped_area(length, begin, end)
        return ENOMEM if found is None else found

    def _top_down(self, addr0: int, length: int, flags: int) -> int:
        """arch_get_unmapped_area_topdown: the hint, below mmap_base, then bottom-up."""
        if length > TASK_SIZE:
            return ENOMEM
        if flags & MAP_FIXED:
            return addr0
        if not flags & MAP_32BIT:
            if addr0:
                addr = page_align(addr0)
                if self._hint_fits(addr, length, TASK_SIZE):
                    return addr
            found = self.vmas.unmapped_area_topdown(length, PAGE_SIZE, self.mmap_base)
            if found is not None:
                return found
        return self._bottom_up(addr0, length, flags)

    def get_unmapped_area(self, addr: int, length: int, flags: int) -> int:
        """An address or -errno; no model file has its own get_unmapped_area."""
        if length > TASK_SIZE:
            return ENOMEM
        addr = self._top_down(addr, length, flags)
        if addr < 0:
            return addr
        if addr > TASK_SIZE - length:
            return ENOMEM
        if addr & ~PAGE_MASK:
            return EINVAL
        return self.security_mmap_addr(addr)

    def security_mmap_addr(self, addr: int) -> int:
        """[4.6: security/commoncap.c cap_mmap_addr] no CAP_SYS_RAWIO."""
        return EPERM if addr < self.pconf.mmap_min_addr else addr

    # -- anon_vma and stacks [4.6: mm/rmap.c anon_vma_prepare; mm/mmap.c expand_downwards] -----

    def _anon_compatible(self, a: FVma, b: FVma) -> bool:
        return (a.end == b.start and a.file is b.file
                and not (a.flags ^ b.flags) & ~_ANON_COMPAT_IGNORED
                and b.pgoff == a.pgoff + ((b.start - a.start) >> PAGE_SHIFT))

    def anon_vma_prepare(self, vma: FVma) -> None:
        """Reuse a compatible neighbour's anon_vma (the next one first), else a new one."""
        if vma.anon_vma is not None:
            return
        nxt, prev = vma.next, vma.prev
        if (nxt is not None and self._anon_compatible(vma, nxt) and nxt.anon_vma is not None
                and not nxt.inherited):
            vma.anon_vma = nxt.anon_vma
        elif (prev is not None and self._anon_compatible(prev, vma)
              and prev.anon_vma is not None and not prev.inherited):
            vma.anon_vma = prev.anon_vma
        else:
            vma.anon_vma = self.new_anon_vma()

    def acct_stack_growth(self, vma: FVma, size: int, grow: int) -> int:
        if not self.may_expand_vm(grow):
            return ENOMEM
        actual = size - PAGE_SIZE if size and vma.flags & VM_GROWSDOWN else size
        if actual > self.pconf.rlimit_stack:
            return ENOMEM
        if vma.flags & VM_LOCKED and self.locked_vm + grow > self.mlock_limit_pages():
            return ENOMEM
        return self.enough_memory(grow)

    def expand_downwards(self, vma: FVma, address: int) -> int:
        address &= PAGE_MASK
        if self.security_mmap_addr(address) < 0:
            return EPERM
        self.anon_vma_prepare(vma)
        if address >= vma.start:
            return 0
        grow = (vma.start - address) >> PAGE_SHIFT
        if grow > vma.pgoff:
            return ENOMEM
        error = self.acct_stack_growth(vma, vma.end - address, grow)
        if error:
            return error
        if vma.flags & VM_LOCKED:
            self.locked_vm += grow
        self.stat_account(vma.flags, grow)
        self.vmas.resize(vma, address, vma.end)
        vma.pgoff -= grow
        return 0

    def expand_stack(self, vma: FVma, address: int) -> int:
        """x86 stacks grow down; growing into a VMA that is not a stack is refused."""
        address &= PAGE_MASK
        prev = vma.prev
        if prev is not None and prev.end == address and not prev.flags & VM_GROWSDOWN:
            return ENOMEM
        return self.expand_downwards(vma, address)

    # -- fork [4.6: kernel/fork.c dup_mmap; mm/rmap.c anon_vma_fork] ----------------------------

    def dup_mmap(self, mm: FastMm) -> int:
        """Fill the empty ``mm`` with the child's copy: 0, or -ENOMEM with this mm as it was.
        The reference model's order and its two simplifications (``refmodel.vma_core.
        dup_mmap``): each VM_ACCOUNT charge is tested through this mm and handed back after
        (kept when ``mm`` shares this mm's counter), and every copy of a VMA with an anon_vma
        gets a new one with an inherited chain."""
        for name in ("total_vm", "data_vm", "exec_vm", "stack_vm", "start_brk", "brk_value",
                     "end_data", "mmap_base", "mmap_legacy_base", "next_file"):
            setattr(mm, name, getattr(self, name))
        if not mm.shared:
            mm.commit = VmCommit(sysctl=dict(self.sysctl))
        for ident, file in self.files.items():
            mm.files[ident] = FFile(ident=file.ident, fd=file.fd, size=file.size,
                                    readable=file.readable, writable=file.writable,
                                    shmem=file.shmem, charged=file.charged)
        mm.fds = {fd: mm.files[file.ident] for fd, file in self.fds.items()}
        committed = self.committed
        charged = 0
        for vma in self.vmas:
            if vma.flags & VM_DONTCOPY:
                mm.stat_account(vma.flags, -vma.pages)
                continue
            if vma.flags & VM_ACCOUNT:
                if self.enough_memory(vma.pages):
                    self.committed = committed
                    return ENOMEM
                charged += vma.pages
            copy = FVma(start=vma.start, end=vma.end, flags=vma.flags & VM_LOCKED_CLEAR_MASK,
                        pgoff=vma.pgoff,
                        file=None if vma.file is None else mm.files[vma.file.ident])
            if vma.anon_vma is not None:
                copy.anon_vma = mm.new_anon_vma()
                copy.inherited = True
            mm.link(copy)
        for ident in [i for i, f in mm.files.items() if f.shmem and not f.users]:
            del mm.files[ident]
        if mm.shared:
            for ident, file in mm.files.items():
                if file.shmem:
                    theirs = self.files[ident]
                    if theirs.holders is None:
                        theirs.holders = [1]
                    theirs.holders[0] += 1
                    file.holders = theirs.holders
            return 0
        self.committed = committed
        mm.committed = charged + sum(f.charged for f in mm.files.values())
        return 0

    def unmap_all(self) -> None:
        """[4.6: mm/mmap.c exit_mmap] every VMA goes with its VM_ACCOUNT charge and its file
        reference."""
        nr_accounted = 0
        doomed = list(self.vmas)
        self.vmas = VmaStore()
        for vma in doomed:
            if vma.flags & VM_ACCOUNT:
                nr_accounted += vma.pages
            self.fput(vma.file)
        self.committed -= nr_accounted
        self.total_vm = self.data_vm = self.exec_vm = self.stack_vm = self.locked_vm = 0
