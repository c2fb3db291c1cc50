"""The system calls of the address space, as 4.6 runs them, in 4.6's order of checks.

Each function takes the ``Mm`` and the syscall's arguments already reduced to 64 bits, and
returns what the system call returns: an address, 0 or -errno (brk returns a break).
"""

from __future__ import annotations

from typing import Final

from refmodel.vma_core import (
    EINVAL,
    ENOMEM,
    File,
    Mm,
    Vma,
    anon_vma_prepare,
    count_vma_pages_range,
    do_munmap,
    expand_downwards,
    expand_stack,
    get_unmapped_area,
    may_expand_vm,
    mlock_limit_pages,
    split_vma,
    u64,
    vm_enough_memory,
    vm_stat_account,
    vm_unacct_memory,
    vma_adjust,
    vma_merge,
)
from specs.errno import Errno
from specs.machine import PAGE_SHIFT, PAGE_SIZE
from specs.vma import (
    MAP_ANONYMOUS,
    MAP_DENYWRITE,
    MAP_EXECUTABLE,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_HUGE_MASK,
    MAP_HUGE_SHIFT,
    MAP_HUGETLB,
    MAP_LOCKED,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_TYPE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    OVERCOMMIT_NEVER,
    PAGE_MASK,
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_READ,
    PROT_SEM,
    PROT_WRITE,
    TASK_SIZE,
    VM_ACCOUNT,
    VM_DATA_DEFAULT_FLAGS,
    VM_DONTEXPAND,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_HUGETLB,
    VM_LOCKED,
    VM_LOCKED_CLEAR_MASK,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NORESERVE,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_SPECIAL,
    VM_WRITE,
    page_align,
)

EBADF: Final = -Errno.EBADF
EACCES: Final = -Errno.EACCES
EAGAIN: Final = -Errno.EAGAIN
EPERM: Final = -Errno.EPERM
EFAULT: Final = -Errno.EFAULT
EOVERFLOW: Final = -Errno.EOVERFLOW

#: MAP_HUGE_SHIFT size logs 4.6 knows on this machine: 0 (default, 2 MiB) and 21 (2 MiB).
HUGE_SIZE_LOGS: Final = frozenset({0, 21})


def calc_vm_prot_bits(prot: int) -> int:
    """PROT_READ/WRITE/EXEC to VM_READ/WRITE/EXEC (same bit values); other bits are dropped.
    [Simplified: no protection keys (a CPU without PKU), so no pkey bits.]"""
    return prot & (PROT_READ | PROT_WRITE | PROT_EXEC)


def calc_vm_flag_bits(flags: int) -> int:
    return ((VM_GROWSDOWN if flags & MAP_GROWSDOWN else 0)
            | (VM_LOCKED if flags & MAP_LOCKED else 0))


# ---------------------------------------------------------------------------------------------
# mmap [4.6: arch/x86/kernel/sys_x86_64.c sys_mmap; mm/mmap.c sys_mmap_pgoff, do_mmap,
# mmap_region; mm/util.c vm_mmap_pgoff]
# ---------------------------------------------------------------------------------------------


def sys_mmap(mm: Mm, addr: int, length: int, prot: int, flags: int, fd: int,
             offset: int) -> int:
    if offset & ~PAGE_MASK:
        return EINVAL
    pgoff = offset >> PAGE_SHIFT
    file: File | None = None
    if not flags & MAP_ANONYMOUS:
        file = mm.fds.get(fd & 0xFFFF_FFFF)
        if file is None:
            return EBADF
        if flags & MAP_HUGETLB:
            return EINVAL
    elif flags & MAP_HUGETLB:
        # [Simplified: no huge pages are reserved; 4.6 refuses the mapping in
        # hugetlbfs_file_mmap's reservation (-ENOMEM) unless MAP_NORESERVE, which the model
        # refuses too; an unknown size is -EINVAL from hstate_sizelog.]
        if (flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK not in HUGE_SIZE_LOGS:
            return EINVAL
        return EINVAL if length == 0 else ENOMEM
    flags &= ~(MAP_EXECUTABLE | MAP_DENYWRITE)
    return do_mmap(mm, file, addr, length, prot, flags, pgoff)


def round_hint_to_min(mm: Mm, hint: int) -> int:
    hint &= PAGE_MASK
    if hint and hint < mm.pconf.mmap_min_addr:
        return page_align(mm.pconf.mmap_min_addr)
    return hint


def mlock_future_check(mm: Mm, vm_flags: int, length: int) -> int:
    if vm_flags & VM_LOCKED and (length >> PAGE_SHIFT) + mm.locked_vm > mlock_limit_pages(mm):
        return EAGAIN
    return 0


def do_mmap(mm: Mm, file: File | None, addr: int, length: int, prot: int, flags: int,
            pgoff: int) -> int:
    """Argument checks, placement and vm_flags; mmap_region does the mapping."""
    if length == 0:
        return EINVAL
    if not flags & MAP_FIXED:
        addr = round_hint_to_min(mm, addr)
    length = page_align(length)
    if length == 0:
        return ENOMEM
    if pgoff + (length >> PAGE_SHIFT) > 0xFFFF_FFFF_FFFF_FFFF:
        return EOVERFLOW
    if mm.map_count > mm.max_map_count:
        return ENOMEM
    addr = get_unmapped_area(mm, addr, length, flags)
    if addr < 0:
        return addr
    vm_flags = (calc_vm_prot_bits(prot) | calc_vm_flag_bits(flags)
                | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC)
    if flags & MAP_LOCKED and mm.pconf.rlimit_memlock == 0:  # can_do_mlock
        return EPERM
    if mlock_future_check(mm, vm_flags, length):
        return EAGAIN
    map_type = flags & MAP_TYPE
    if file is not None:
        if map_type not in (MAP_SHARED, MAP_PRIVATE):
            return EINVAL
        if map_type == MAP_SHARED:
            if prot & PROT_WRITE and not file.writable:
                return EACCES
            vm_flags |= VM_SHARED | VM_MAYSHARE
            if not file.writable:
                vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
        if not file.readable:
            return EACCES
        if vm_flags & VM_GROWSDOWN:
            return EINVAL
    elif map_type == MAP_SHARED:
        if vm_flags & VM_GROWSDOWN:
            return EINVAL
        pgoff = 0
        vm_flags |= VM_SHARED | VM_MAYSHARE
    elif map_type == MAP_PRIVATE:
        pgoff = addr >> PAGE_SHIFT
    else:
        return EINVAL
    if flags & MAP_NORESERVE and mm.sysctl["overcommit_memory"] != OVERCOMMIT_NEVER:
        vm_flags |= VM_NORESERVE
    return mmap_region(mm, file, addr, length, vm_flags, pgoff)


def accountable_mapping(vm_flags: int) -> bool:
    """Private writable mappings without MAP_NORESERVE are charged."""
    return (vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE


def mmap_region(mm: Mm, file: File | None, addr: int, length: int, vm_flags: int,
                pgoff: int) -> int:
    """Replace whatever is at [addr, addr+len), charge, then merge or link a new VMA.  A
    refusal after the unmap step leaves the old mappings unmapped, as in 4.6."""
    pages = length >> PAGE_SHIFT
    if not may_expand_vm(mm, vm_flags, pages):
        replaced = count_vma_pages_range(mm, addr, addr + length)
        if not may_expand_vm(mm, vm_flags, pages - replaced):
            return ENOMEM
    if mm.overlaps(addr, addr + length) and do_munmap(mm, addr, length):
        return ENOMEM
    charged = 0
    if accountable_mapping(vm_flags):
        charged = pages
        if vm_enough_memory(mm, charged):
            return ENOMEM
        vm_flags |= VM_ACCOUNT
    prev = mm.prev_for(addr)
    vma = vma_merge(mm, prev, addr, addr + length, vm_flags, None, file, pgoff)
    if vma is None:
        if file is None and vm_flags & VM_SHARED:
            # [4.6: mm/shmem.c shmem_zero_setup, shmem_acct_size]
            shmem_charge = 0 if vm_flags & VM_NORESERVE else pages
            if shmem_charge and vm_enough_memory(mm, shmem_charge):
                vm_unacct_memory(mm, charged)
                return ENOMEM
            file = mm.new_file(fd=None, size=length, readable=True, writable=True, shmem=True)
            file.charged = shmem_charge
        vma = Vma(start=addr, end=addr + length, flags=vm_flags, pgoff=pgoff, file=file)
        mm.link(vma)
    vm_stat_account(mm, vm_flags, pages)
    if vm_flags & VM_LOCKED:
        if vm_flags & VM_SPECIAL:
            vma.flags &= VM_LOCKED_CLEAR_MASK
        else:
            mm.locked_vm += pages
    vma.flags |= VM_SOFTDIRTY
    return addr


# ---------------------------------------------------------------------------------------------
# munmap [4.6: mm/mmap.c sys_munmap, vm_munmap]
# ---------------------------------------------------------------------------------------------


def sys_munmap(mm: Mm, addr: int, length: int) -> int:
    return do_munmap(mm, addr, length)


# ---------------------------------------------------------------------------------------------
# mprotect [4.6: mm/mprotect.c sys_mprotect, mprotect_fixup]
# ---------------------------------------------------------------------------------------------


def sys_mprotect(mm: Mm, start: int, length: int, prot: int) -> int:
    """VMA by VMA; a refusal part-way leaves the VMAs already changed as they are."""
    grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
    prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
    if grows == PROT_GROWSDOWN | PROT_GROWSUP:
        return EINVAL
    if start & ~PAGE_MASK:
        return EINVAL
    if not length:
        return 0
    length = page_align(length)
    end = u64(start + length)
    if end <= start:
        return ENOMEM
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):  # arch_validate_prot
        return EINVAL
    i = mm.find_index(start)
    if i == len(mm.vmas):
        return ENOMEM
    vma = mm.vmas[i]
    prev = mm.vmas[i - 1] if i else None
    if grows & PROT_GROWSDOWN:
        if vma.start >= end:
            return ENOMEM
        start = vma.start
        if not vma.flags & VM_GROWSDOWN:
            return EINVAL
    else:
        if vma.start > start:
            return ENOMEM
        if grows & PROT_GROWSUP:  # x86 has no VM_GROWSUP
            return EINVAL
    if start > vma.start:
        prev = vma
    nstart = start
    while True:
        newflags = calc_vm_prot_bits(prot) | (vma.flags & ~(VM_READ | VM_WRITE | VM_EXEC))
        if (newflags & ~(newflags >> 4)) & (VM_READ | VM_WRITE | VM_EXEC):
            return EACCES
        tmp = min(vma.end, end)
        error, prev = mprotect_fixup(mm, vma, prev, nstart, tmp, newflags)
        if error:
            return error
        nstart = max(tmp, prev.end)
        if nstart >= end:
            return 0
        nxt = mm.next_of(prev)
        if nxt is None or nxt.start != nstart:
            return ENOMEM
        vma = nxt


def mprotect_fixup(mm: Mm, vma: Vma, prev: Vma | None, start: int, end: int,
                   newflags: int) -> tuple[int, Vma]:
    """Returns (error, the new *pprev).  Becoming writable charges a never-charged private
    VMA; losing write never gives the charge back."""
    oldflags = vma.flags
    nrpages = (end - start) >> PAGE_SHIFT
    charged = 0
    if newflags == oldflags:
        return 0, vma
    if newflags & VM_WRITE:
        if not may_expand_vm(mm, newflags, nrpages) and may_expand_vm(mm, oldflags, nrpages):
            return ENOMEM, vma if prev is None else prev
        if not oldflags & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
            charged = nrpages
            if vm_enough_memory(mm, charged):
                return ENOMEM, vma if prev is None else prev
            newflags |= VM_ACCOUNT
    pgoff = vma.pgoff + ((start - vma.start) >> PAGE_SHIFT)
    merged = vma_merge(mm, prev, start, end, newflags, vma.anon_vma, vma.file, pgoff)
    if merged is not None:
        vma = merged
    else:
        if start != vma.start:
            error = split_vma(mm, vma, start, True)
            if error:
                vm_unacct_memory(mm, charged)
                return error, vma
        if end != vma.end:
            error = split_vma(mm, vma, end, False)
            if error:
                vm_unacct_memory(mm, charged)
                return error, vma
    vma.flags = newflags
    vm_stat_account(mm, oldflags, -nrpages)
    vm_stat_account(mm, newflags, nrpages)
    return 0, vma


# ---------------------------------------------------------------------------------------------
# mremap [4.6: mm/mremap.c sys_mremap, mremap_to, vma_to_resize, vma_expandable, move_vma;
# mm/mmap.c copy_vma]
# ---------------------------------------------------------------------------------------------


def vma_to_resize(mm: Mm, addr: int, old_len: int, new_len: int) -> tuple[int, Vma | None, int]:
    """(error, vma, pages charged)."""
    vma = mm.find_vma(addr)
    if vma is None or vma.start > addr:
        return EFAULT, None, 0
    if old_len > vma.end - addr:
        return EFAULT, None, 0
    if new_len == old_len:
        return 0, vma, 0
    pgoff = ((addr - vma.start) >> PAGE_SHIFT) + vma.pgoff
    if pgoff + (new_len >> PAGE_SHIFT) > 0xFFFF_FFFF_FFFF_FFFF:
        return EINVAL, None, 0
    if vma.flags & (VM_DONTEXPAND | VM_PFNMAP):
        return EFAULT, None, 0
    if vma.flags & VM_LOCKED:
        locked = (mm.locked_vm << PAGE_SHIFT) + new_len - old_len
        if locked > mm.pconf.rlimit_memlock:
            return EAGAIN, None, 0
    delta = (new_len - old_len) >> PAGE_SHIFT
    if not may_expand_vm(mm, vma.flags, delta):
        return ENOMEM, None, 0
    charged = 0
    if vma.flags & VM_ACCOUNT:
        if vm_enough_memory(mm, delta):
            return ENOMEM, None, 0
        charged = delta
    return 0, vma, charged


def copy_vma(mm: Mm, vma: Vma, addr: int, length: int, pgoff: int) -> tuple[Vma, Vma]:
    """(new_vma, vma): the copy at the destination, merged with neighbours where it can be,
    and the source, which is the merged VMA when an unfaulted source merged with itself."""
    if vma.is_anonymous() and vma.anon_vma is None:
        pgoff = addr >> PAGE_SHIFT
    prev = mm.prev_for(addr)
    new_vma = vma_merge(mm, prev, addr, addr + length, vma.flags, vma.anon_vma, vma.file, pgoff)
    if new_vma is not None:
        if new_vma.start <= vma.start < new_vma.end:
            vma = new_vma
        return new_vma, vma
    new_vma = Vma(start=addr, end=addr + length, flags=vma.flags, pgoff=pgoff, file=vma.file,
                  anon_vma=vma.anon_vma, inherited=vma.inherited)
    mm.link(new_vma)
    return new_vma, vma


def move_vma(mm: Mm, vma: Vma, old_addr: int, old_len: int, new_len: int,
             new_addr: int) -> int:
    """Copy, then unmap the old range with VM_ACCOUNT hidden so its charge moves along."""
    if mm.map_count >= mm.max_map_count - 3:
        return ENOMEM
    vm_flags = vma.flags
    new_pgoff = vma.pgoff + ((old_addr - vma.start) >> PAGE_SHIFT)
    _new_vma, vma = copy_vma(mm, vma, new_addr, new_len, new_pgoff)
    excess = 0
    split = False
    if vm_flags & VM_ACCOUNT:
        vma.flags &= ~VM_ACCOUNT
        excess = vma.end - vma.start - old_len
        split = old_addr > vma.start and old_addr + old_len < vma.end
    vm_stat_account(mm, vma.flags, new_len >> PAGE_SHIFT)
    if do_munmap(mm, old_addr, old_len) < 0:
        vm_unacct_memory(mm, excess >> PAGE_SHIFT)
        excess = 0
    if excess:
        vma.flags |= VM_ACCOUNT
        if split:
            nxt = mm.next_of(vma)
            assert nxt is not None
            nxt.flags |= VM_ACCOUNT
    if vm_flags & VM_LOCKED:
        mm.locked_vm += new_len >> PAGE_SHIFT
    return new_addr


def _map_flags(vma: Vma, fixed: bool) -> int:
    return (MAP_FIXED if fixed else 0) | (MAP_SHARED if vma.flags & VM_MAYSHARE else 0)


def mremap_to(mm: Mm, addr: int, old_len: int, new_addr: int, new_len: int) -> int:
    if new_addr & ~PAGE_MASK:
        return EINVAL
    if new_len > TASK_SIZE or new_addr > TASK_SIZE - new_len:
        return EINVAL
    if u64(addr + old_len) > new_addr and new_addr + new_len > addr:
        return EINVAL
    ret = do_munmap(mm, new_addr, new_len)
    if ret:
        return ret
    if old_len >= new_len:
        ret = do_munmap(mm, u64(addr + new_len), old_len - new_len)
        if ret and old_len != new_len:
            return ret
        old_len = new_len
    error, vma, charged = vma_to_resize(mm, addr, old_len, new_len)
    if vma is None:
        return error
    pgoff = vma.pgoff + ((addr - vma.start) >> PAGE_SHIFT)
    del pgoff  # only a file's own get_unmapped_area would use it
    ret = get_unmapped_area(mm, new_addr, new_len, _map_flags(vma, True))
    if ret >= 0:
        ret = move_vma(mm, vma, addr, old_len, new_len, new_addr)
    if ret < 0:
        vm_unacct_memory(mm, charged)
    return ret


def vma_expandable(mm: Mm, vma: Vma, delta: int) -> bool:
    end = vma.end + delta
    if end > 0xFFFF_FFFF_FFFF_FFFF:
        return False
    nxt = mm.next_of(vma)
    if nxt is not None and nxt.start < end:
        return False
    return get_unmapped_area(mm, vma.start, end - vma.start, MAP_FIXED) >= 0


def sys_mremap(mm: Mm, addr: int, old_len: int, new_len: int, flags: int,
               new_addr: int) -> int:
    """Shrink in place, grow in place when the VMA can extend, else move (MREMAP_MAYMOVE)."""
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE):
        return EINVAL
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        return EINVAL
    if addr & ~PAGE_MASK:
        return EINVAL
    old_len = page_align(old_len)
    new_len = page_align(new_len)
    if not new_len:
        return EINVAL
    if flags & MREMAP_FIXED:
        return mremap_to(mm, addr, old_len, new_addr, new_len)
    if old_len >= new_len:
        ret = do_munmap(mm, u64(addr + new_len), old_len - new_len)
        if ret and old_len != new_len:
            return ret
        return addr
    error, vma, charged = vma_to_resize(mm, addr, old_len, new_len)
    if vma is None:
        return error
    if old_len == vma.end - addr and vma_expandable(mm, vma, new_len - old_len):
        pages = (new_len - old_len) >> PAGE_SHIFT
        vma_adjust(mm, vma, vma.start, addr + new_len, vma.pgoff)
        vm_stat_account(mm, vma.flags, pages)
        if vma.flags & VM_LOCKED:
            mm.locked_vm += pages
        return addr
    ret = ENOMEM
    if flags & MREMAP_MAYMOVE:
        ret = get_unmapped_area(mm, 0, new_len, _map_flags(vma, False))
        if ret >= 0:
            ret = move_vma(mm, vma, addr, old_len, new_len, ret)
    if ret < 0:
        vm_unacct_memory(mm, charged)
    return ret


# ---------------------------------------------------------------------------------------------
# brk [4.6: mm/mmap.c sys_brk, do_brk]
# ---------------------------------------------------------------------------------------------


def sys_brk(mm: Mm, brk: int) -> int:
    """The new break, or the old one when refused.  [Simplified: CONFIG_COMPAT_BRK without
    brk randomisation, so min_brk is end_data, which equals start_brk (no data segment);
    RLIMIT_DATA is infinite, so check_data_rlimit never refuses.]"""
    if brk < mm.end_data:
        return mm.brk
    newbrk = page_align(brk)
    oldbrk = page_align(mm.brk)
    if oldbrk != newbrk:
        if brk <= mm.brk:
            if do_munmap(mm, newbrk, u64(oldbrk - newbrk)):
                return mm.brk
        else:
            if mm.find_vma_intersection(oldbrk, u64(newbrk + PAGE_SIZE)) is not None:
                return mm.brk
            if do_brk(mm, oldbrk, u64(newbrk - oldbrk)) != oldbrk:
                return mm.brk
    mm.brk = brk
    return brk


def do_brk(mm: Mm, addr: int, length: int) -> int:
    length = page_align(length)
    if not length:
        return addr
    flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT
    error = get_unmapped_area(mm, addr, length, MAP_FIXED)
    if error < 0:
        return error
    if mm.overlaps(addr, addr + length) and do_munmap(mm, addr, length):
        return ENOMEM
    pages = length >> PAGE_SHIFT
    if not may_expand_vm(mm, flags, pages):
        return ENOMEM
    if mm.map_count > mm.max_map_count:
        return ENOMEM
    if vm_enough_memory(mm, pages):
        return ENOMEM
    vma = vma_merge(mm, mm.prev_for(addr), addr, addr + length, flags, None, None,
                    addr >> PAGE_SHIFT)
    if vma is None:
        vma = Vma(start=addr, end=addr + length, flags=flags, pgoff=addr >> PAGE_SHIFT,
                  file=None)
        mm.link(vma)
    mm.total_vm += pages
    mm.data_vm += pages
    vma.flags |= VM_SOFTDIRTY
    return addr


# ---------------------------------------------------------------------------------------------
# touch: the VMA-level part of a user fault [4.6: arch/x86/mm/fault.c __do_page_fault,
# access_error; mm/memory.c do_anonymous_page, check_stack_guard_page, do_cow_fault]
# ---------------------------------------------------------------------------------------------


def touch(mm: Mm, addr: int, write: bool) -> int:
    """0, or -EFAULT where 4.6 sends SIGSEGV or SIGBUS; what happened before the signal
    (stack growth, anon_vma_prepare) stays.  [Simplified: the stack pointer is taken to be at
    the faulting address, so __do_page_fault's distance-below-%sp check always passes.]"""
    if addr >= TASK_SIZE:
        return EFAULT
    vma = mm.find_vma(addr)
    if vma is None:
        return EFAULT
    if vma.start > addr:
        if not vma.flags & VM_GROWSDOWN:
            return EFAULT
        if expand_stack(mm, vma, addr):
            return EFAULT
    if write and not vma.flags & VM_WRITE:
        return EFAULT
    if not write and not vma.flags & (VM_READ | VM_WRITE | VM_EXEC):
        return EFAULT
    if vma.is_anonymous():
        if check_stack_guard_page(mm, vma, addr) < 0:
            return EFAULT
        if write:
            anon_vma_prepare(mm, vma)
        return 0
    private = not vma.flags & VM_SHARED
    if write and private:
        anon_vma_prepare(mm, vma)  # do_cow_fault prepares before it reads the file
    assert vma.file is not None
    index = ((addr - vma.start) >> PAGE_SHIFT) + vma.pgoff
    if index >= (vma.file.size + PAGE_SIZE - 1) >> PAGE_SHIFT:
        return EFAULT  # SIGBUS: beyond the end of the file
    return 0


def check_stack_guard_page(mm: Mm, vma: Vma, addr: int) -> int:
    """Touching the lowest page of a stack grows it one more page first."""
    addr &= PAGE_MASK
    if vma.flags & VM_GROWSDOWN and addr == vma.start:
        prev = mm.prev_of(vma)
        if prev is not None and prev.end == addr:
            return 0 if prev.flags & VM_GROWSDOWN else ENOMEM
        return expand_downwards(mm, vma, addr - PAGE_SIZE)
    return 0
