"""The fast address space: ``FastAddressSpace`` satisfies ``specs.vma.AddressSpace`` for
address spaces of up to DEFAULT_MAX_MAP_COUNT (65,530) VMAs and more.

It makes the reference model's decisions in the reference model's order (so every result and
every view is equal to ``refmodel.vma``'s after every call; ``tests/fastmodel/
test_vma_equivalence.py`` checks it), over a store built for size (:mod:`fastmodel.vma_store`):

* find_vma is two C-level bisects, neighbours are vm_next/vm_prev links;
* get_unmapped_area skips whole blocks of VMAs by their largest gap, as 4.6 prunes rbtree
  subtrees by rb_subtree_gap, instead of walking every gap below mmap_base;
* munmap removes a run of VMAs a block slice at a time;
* ``view()`` is built on demand and cached until the next call that can change the mm, so
  checking code that asks for it twice between two calls pays once.

Complexity at n VMAs, B = ``vma_store.BLOCK``: find_vma O(log n); mmap, mprotect of one VMA
and munmap of k VMAs O(B + n/B + k) Python steps (list shifts inside one block are memmoves);
placement O(n/B + B); ``view()`` O(n) once per change.
"""

from __future__ import annotations

from typing import Final

from fastmodel.vma_madvise import MadviseMixin
from fastmodel.vma_mm import EINVAL, ENOMEM, EPERM, FastMm, u64
from fastmodel.vma_store import FFile, FVma
from specs.errno import Errno
from specs.machine import PAGE_SHIFT, PAGE_SIZE, MachineConfig
from specs.vma import (
    ALL_CAPABILITIES,
    FIRST_FD,
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
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    OVERCOMMIT_NEVER,
    PAGE_MASK,
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_READ,
    PROT_SEM,
    PROT_WRITE,
    STACK_EXPAND_AT_EXEC,
    STACK_TOP,
    TASK_SIZE,
    ULONG_MASK,
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
    VM_STACK_FLAGS,
    VM_WRITE,
    Capability,
    MmView,
    ProcessConfig,
    VmaView,
    VmCommit,
    page_align,
    process_config,
    write_sysctl,
)

EBADF: Final = -Errno.EBADF
EACCES: Final = -Errno.EACCES
EAGAIN: Final = -Errno.EAGAIN
EFAULT: Final = -Errno.EFAULT
EOVERFLOW: Final = -Errno.EOVERFLOW

#: MAP_HUGE_SHIFT size logs 4.6 knows on this machine: 0 (the default) and 21 (2 MiB).
HUGE_SIZE_LOGS: Final = frozenset({0, 21})
_PROT_RWX: Final = PROT_READ | PROT_WRITE | PROT_EXEC
_VM_RWX: Final = VM_READ | VM_WRITE | VM_EXEC
_NO_CHARGE_FLAGS: Final = VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE
_MAX_PGOFF: Final = 0xFFFF_FFFF_FFFF_FFFF


class FastAddressSpace(MadviseMixin):
    """The fast implementation of ``specs.vma.AddressSpace``."""

    def __init__(self, config: MachineConfig, pconf: ProcessConfig | None = None,
                 commit: VmCommit | None = None) -> None:
        super().__init__(pconf if pconf is not None else process_config(config), commit)
        self.config = config
        self.capabilities: frozenset[Capability] = ALL_CAPABILITIES
        self.next_fd = FIRST_FD
        self._view: MmView | None = None
        if self.pconf.with_stack:
            self._exec_stack()

    def _exec_stack(self) -> None:
        """One page of stack at STACK_TOP grown by 128 KiB, as exec leaves it
        [4.6: fs/exec.c __bprm_mm_init, setup_arg_pages].  [Simplified: the arguments fit in
        the first page and the stack is not randomised.]"""
        start = STACK_TOP - PAGE_SIZE
        vma = FVma(start=start, end=STACK_TOP, flags=VM_SOFTDIRTY | VM_STACK_FLAGS,
                   pgoff=start >> PAGE_SHIFT, file=None)
        self.enough_memory(1)
        self.link(vma)
        self.total_vm = self.stack_vm = 1
        rlim_stack = self.pconf.rlimit_stack & PAGE_MASK
        if PAGE_SIZE + STACK_EXPAND_AT_EXEC > rlim_stack:
            base = vma.end - rlim_stack
        else:
            base = vma.start - STACK_EXPAND_AT_EXEC
        self.expand_downwards(vma, base)

    # -- system calls ----------------------------------------------------------------------------

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        """sys_mmap [4.6: arch/x86/kernel/sys_x86_64.c sys_mmap; mm/mmap.c sys_mmap_pgoff]."""
        self._view = None
        addr, length, prot, flags = (addr & ULONG_MASK, length & ULONG_MASK, prot & ULONG_MASK,
                                     flags & ULONG_MASK)
        offset &= ULONG_MASK
        if offset & ~PAGE_MASK:
            return EINVAL
        file: FFile | None = None
        if not flags & MAP_ANONYMOUS:
            file = self.fds.get(fd & 0xFFFF_FFFF)
            if file is None:
                return EBADF
            if flags & MAP_HUGETLB:
                return EINVAL
        elif flags & MAP_HUGETLB:
            # [Simplified: no huge pages are reserved, so a hugetlb mapping is refused as
            # refmodel.vma_calls.sys_mmap explains.]
            if (flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK not in HUGE_SIZE_LOGS:
                return EINVAL
            return EINVAL if length == 0 else ENOMEM
        flags &= ~(MAP_EXECUTABLE | MAP_DENYWRITE)
        return self._do_mmap(file, addr, length, prot, flags, offset >> PAGE_SHIFT)

    def _do_mmap(self, file: FFile | None, addr: int, length: int, prot: int, flags: int,
                 pgoff: int) -> int:
        """[4.6: mm/mmap.c do_mmap] checks, placement and vm_flags."""
        if length == 0:
            return EINVAL
        if not flags & MAP_FIXED:
            addr &= PAGE_MASK
            if addr and addr < self.pconf.mmap_min_addr:
                addr = page_align(self.pconf.mmap_min_addr)
        length = page_align(length)
        if length == 0:
            return ENOMEM
        if pgoff + (length >> PAGE_SHIFT) > _MAX_PGOFF:
            return EOVERFLOW
        if self.map_count > self.max_map_count:
            return ENOMEM
        addr = self.get_unmapped_area(addr, length, flags)
        if addr < 0:
            return addr
        vm_flags = ((prot & _PROT_RWX) | (VM_GROWSDOWN if flags & MAP_GROWSDOWN else 0)
                    | (VM_LOCKED if flags & MAP_LOCKED else 0)
                    | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC)
        if flags & MAP_LOCKED and self.pconf.rlimit_memlock == 0:
            return EPERM
        if (vm_flags & VM_LOCKED
                and (length >> PAGE_SHIFT) + self.locked_vm > self.mlock_limit_pages()):
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
        if flags & MAP_NORESERVE and self.sysctl["overcommit_memory"] != OVERCOMMIT_NEVER:
            vm_flags |= VM_NORESERVE
        return self._mmap_region(file, addr, length, vm_flags, pgoff)

    def _mmap_region(self, file: FFile | None, addr: int, length: int, vm_flags: int,
                     pgoff: int) -> int:
        """[4.6: mm/mmap.c mmap_region] unmap what is there, charge, merge or link.  A refusal
        after the unmap leaves the range unmapped, as in 4.6."""
        pages = length >> PAGE_SHIFT
        end = addr + length
        if (not self.may_expand_vm(pages)
                and not self.may_expand_vm(pages - self.count_vma_pages_range(addr, end))):
            return ENOMEM
        if self.vmas.overlaps(addr, end) and self.do_munmap(addr, length):
            return ENOMEM
        charged = 0
        if (vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE:
            charged = pages
            if self.enough_memory(charged):
                return ENOMEM
            vm_flags |= VM_ACCOUNT
        vma = self.vma_merge(self.vmas.prev_for(addr), addr, end, vm_flags, None, file, pgoff)
        if vma is None:
            if file is None and vm_flags & VM_SHARED:
                # [4.6: mm/shmem.c shmem_zero_setup, shmem_acct_size]
                shmem_charge = 0 if vm_flags & VM_NORESERVE else pages
                if shmem_charge and self.enough_memory(shmem_charge):
                    self.committed -= charged
                    return ENOMEM
                file = self.new_file(fd=None, size=length, readable=True, writable=True,
                                     shmem=True)
                file.charged = shmem_charge
            vma = FVma(start=addr, end=end, flags=vm_flags, pgoff=pgoff, file=file)
            self.link(vma)
        self.stat_account(vm_flags, pages)
        if vm_flags & VM_LOCKED:
            if vm_flags & VM_SPECIAL:
                vma.flags &= VM_LOCKED_CLEAR_MASK
            else:
                self.locked_vm += pages
        vma.flags |= VM_SOFTDIRTY
        return addr

    def munmap(self, addr: int, length: int) -> int:
        """sys_munmap [4.6: mm/mmap.c vm_munmap]."""
        self._view = None
        return self.do_munmap(addr & ULONG_MASK, length & ULONG_MASK)

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """[4.6: mm/mprotect.c sys_mprotect] VMA by VMA; a refusal part-way keeps the VMAs
        already changed."""
        self._view = None
        start, length, prot = addr & ULONG_MASK, length & ULONG_MASK, prot & ULONG_MASK
        grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
        prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
        if grows == PROT_GROWSDOWN | PROT_GROWSUP:
            return EINVAL
        if start & ~PAGE_MASK:
            return EINVAL
        if not length:
            return 0
        end = u64(start + page_align(length))
        if end <= start:
            return ENOMEM
        if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):  # arch_validate_prot
            return EINVAL
        vma = self.vmas.find_vma(start)
        if vma is None:
            return ENOMEM
        prev = vma.prev
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
            newflags = (prot & _PROT_RWX) | (vma.flags & ~_VM_RWX)
            if (newflags & ~(newflags >> 4)) & _VM_RWX:
                return EACCES
            tmp = min(vma.end, end)
            error, prev = self._mprotect_fixup(vma, prev, nstart, tmp, newflags)
            if error:
                return error
            nstart = max(tmp, prev.end)
            if nstart >= end:
                return 0
            nxt = prev.next
            if nxt is None or nxt.start != nstart:
                return ENOMEM
            vma = nxt

    def _mprotect_fixup(self, vma: FVma, prev: FVma | None, start: int, end: int,
                        newflags: int) -> tuple[int, FVma]:
        """[4.6: mm/mprotect.c mprotect_fixup] (error, the new *pprev); becoming writable
        charges a private VMA that was never charged, losing write keeps the charge."""
        oldflags = vma.flags
        nrpages = (end - start) >> PAGE_SHIFT
        charged = 0
        if newflags == oldflags:
            return 0, vma
        # 4.6 first asks may_expand_vm for the new flags but not the old ones; that differs
        # only in the RLIMIT_DATA branch, which only warns, so it never refuses here.
        if newflags & VM_WRITE and not oldflags & _NO_CHARGE_FLAGS:
            charged = nrpages
            if self.enough_memory(charged):
                return ENOMEM, vma if prev is None else prev
            newflags |= VM_ACCOUNT
        pgoff = vma.pgoff + ((start - vma.start) >> PAGE_SHIFT)
        merged = self.vma_merge(prev, start, end, newflags, vma.anon_vma, vma.file, pgoff)
        if merged is not None:
            vma = merged
        else:
            error = 0
            if start != vma.start:
                error = self.split_vma(vma, start, True)
            if not error and end != vma.end:
                error = self.split_vma(vma, end, False)
            if error:
                self.committed -= charged
                return error, vma
        vma.flags = newflags
        self.stat_account(oldflags, -nrpages)
        self.stat_account(newflags, nrpages)
        return 0, vma

    def madvise(self, addr: int, length: int, advice: int) -> int:
        """sys_madvise [4.6: mm/madvise.c] (``fastmodel.vma_madvise``)."""
        self._view = None
        return self.do_madvise(addr & ULONG_MASK, length & ULONG_MASK, advice & ULONG_MASK)

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        """[4.6: mm/mremap.c sys_mremap] shrink in place, grow in place when the VMA can
        extend, else move (MREMAP_MAYMOVE)."""
        self._view = None
        addr, flags, new_addr = old_addr & ULONG_MASK, flags & ULONG_MASK, new_addr & ULONG_MASK
        if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE):
            return EINVAL
        if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
            return EINVAL
        if addr & ~PAGE_MASK:
            return EINVAL
        old_len = page_align(old_len & ULONG_MASK)
        new_len = page_align(new_len & ULONG_MASK)
        if not new_len:
            return EINVAL
        if flags & MREMAP_FIXED:
            return self._mremap_to(addr, old_len, new_addr, new_len)
        if old_len >= new_len:
            ret = self.do_munmap(u64(addr + new_len), old_len - new_len)
            if ret and old_len != new_len:
                return ret
            return addr
        error, vma, charged = self._vma_to_resize(addr, old_len, new_len)
        if vma is None:
            return error
        if old_len == vma.end - addr and self._vma_expandable(vma, new_len - old_len):
            pages = (new_len - old_len) >> PAGE_SHIFT
            self.vma_adjust(vma, vma.start, addr + new_len, vma.pgoff)
            self.stat_account(vma.flags, pages)
            if vma.flags & VM_LOCKED:
                self.locked_vm += pages
            return addr
        ret = ENOMEM
        if flags & MREMAP_MAYMOVE:
            ret = self.get_unmapped_area(0, new_len, self._map_flags(vma, False))
            if ret >= 0:
                ret = self._move_vma(vma, addr, old_len, new_len, ret)
        if ret < 0:
            self.committed -= charged
        return ret

    @staticmethod
    def _map_flags(vma: FVma, fixed: bool) -> int:
        return (MAP_FIXED if fixed else 0) | (MAP_SHARED if vma.flags & VM_MAYSHARE else 0)

    def _vma_to_resize(self, addr: int, old_len: int,
                       new_len: int) -> tuple[int, FVma | None, int]:
        """[4.6: mm/mremap.c vma_to_resize] (error, vma, pages charged)."""
        vma = self.vmas.find_vma(addr)
        if vma is None or vma.start > addr or old_len > vma.end - addr:
            return EFAULT, None, 0
        if new_len == old_len:
            return 0, vma, 0
        pgoff = ((addr - vma.start) >> PAGE_SHIFT) + vma.pgoff
        if pgoff + (new_len >> PAGE_SHIFT) > _MAX_PGOFF:
            return EINVAL, None, 0
        if vma.flags & (VM_DONTEXPAND | VM_PFNMAP):
            return EFAULT, None, 0
        if (vma.flags & VM_LOCKED
                and (self.locked_vm << PAGE_SHIFT) + new_len - old_len
                > self.pconf.rlimit_memlock):
            return EAGAIN, None, 0
        delta = (new_len - old_len) >> PAGE_SHIFT
        if not self.may_expand_vm(delta):
            return ENOMEM, None, 0
        charged = 0
        if vma.flags & VM_ACCOUNT:
            if self.enough_memory(delta):
                return ENOMEM, None, 0
            charged = delta
        return 0, vma, charged

    def _vma_expandable(self, vma: FVma, delta: int) -> bool:
        end = vma.end + delta
        if end > _MAX_PGOFF:
            return False
        if vma.next is not None and vma.next.start < end:
            return False
        return self.get_unmapped_area(vma.start, end - vma.start, MAP_FIXED) >= 0

    def _mremap_to(self, addr: int, old_len: int, new_addr: int, new_len: int) -> int:
        """[4.6: mm/mremap.c mremap_to]."""
        if new_addr & ~PAGE_MASK:
            return EINVAL
        if new_len > TASK_SIZE or new_addr > TASK_SIZE - new_len:
            return EINVAL
        if u64(addr + old_len) > new_addr and new_addr + new_len > addr:
            return EINVAL
        ret = self.do_munmap(new_addr, new_len)
        if ret:
            return ret
        if old_len >= new_len:
            ret = self.do_munmap(u64(addr + new_len), old_len - new_len)
            if ret and old_len != new_len:
                return ret
            old_len = new_len
        error, vma, charged = self._vma_to_resize(addr, old_len, new_len)
        if vma is None:
            return error
        ret = self.get_unmapped_area(new_addr, new_len, self._map_flags(vma, True))
        if ret >= 0:
            ret = self._move_vma(vma, addr, old_len, new_len, new_addr)
        if ret < 0:
            self.committed -= charged
        return ret

    def _copy_vma(self, vma: FVma, addr: int, length: int, pgoff: int) -> tuple[FVma, FVma]:
        """[4.6: mm/mmap.c copy_vma] (the copy, the source); the source is the merged VMA
        when an unfaulted source merged with its own copy."""
        if vma.file is None and vma.anon_vma is None:
            pgoff = addr >> PAGE_SHIFT
        new_vma = self.vma_merge(self.vmas.prev_for(addr), addr, addr + length, vma.flags,
                                 vma.anon_vma, vma.file, pgoff)
        if new_vma is not None:
            if new_vma.start <= vma.start < new_vma.end:
                vma = new_vma
            return new_vma, vma
        new_vma = FVma(start=addr, end=addr + length, flags=vma.flags, pgoff=pgoff,
                       file=vma.file, anon_vma=vma.anon_vma, inherited=vma.inherited)
        self.link(new_vma)
        return new_vma, vma

    def _move_vma(self, vma: FVma, old_addr: int, old_len: int, new_len: int,
                  new_addr: int) -> int:
        """[4.6: mm/mremap.c move_vma] copy, then unmap the old range with VM_ACCOUNT hidden
        so that its charge moves with the pages."""
        if self.map_count >= self.max_map_count - 3:
            return ENOMEM
        vm_flags = vma.flags
        new_pgoff = vma.pgoff + ((old_addr - vma.start) >> PAGE_SHIFT)
        _copy, vma = self._copy_vma(vma, new_addr, new_len, new_pgoff)
        excess = 0
        split = False
        if vm_flags & VM_ACCOUNT:
            vma.flags &= ~VM_ACCOUNT
            excess = vma.end - vma.start - old_len
            split = old_addr > vma.start and old_addr + old_len < vma.end
        self.stat_account(vma.flags, new_len >> PAGE_SHIFT)
        if self.do_munmap(old_addr, old_len) < 0:
            self.committed -= excess >> PAGE_SHIFT
            excess = 0
        if excess:
            vma.flags |= VM_ACCOUNT
            if split:
                assert vma.next is not None
                vma.next.flags |= VM_ACCOUNT
        if vm_flags & VM_LOCKED:
            self.locked_vm += new_len >> PAGE_SHIFT
        return new_addr

    def brk(self, addr: int) -> int:
        """[4.6: mm/mmap.c sys_brk] the new break, or the old one when refused.
        [Simplified: as refmodel.vma_calls.sys_brk, min_brk is end_data and RLIMIT_DATA is
        infinite.]"""
        self._view = None
        brk = addr & ULONG_MASK
        if brk < self.end_data:
            return self.brk_value
        newbrk = page_align(brk)
        oldbrk = page_align(self.brk_value)
        if oldbrk != newbrk:
            if brk <= self.brk_value:
                if self.do_munmap(newbrk, u64(oldbrk - newbrk)):
                    return self.brk_value
            else:
                if self.vmas.find_vma_intersection(oldbrk, u64(newbrk + PAGE_SIZE)) is not None:
                    return self.brk_value
                if self._do_brk(oldbrk, u64(newbrk - oldbrk)) != oldbrk:
                    return self.brk_value
        self.brk_value = brk
        return brk

    def _do_brk(self, addr: int, length: int) -> int:
        """[4.6: mm/mmap.c do_brk]."""
        length = page_align(length)
        if not length:
            return addr
        flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT
        error = self.get_unmapped_area(addr, length, MAP_FIXED)
        if error < 0:
            return error
        end = addr + length
        if self.vmas.overlaps(addr, end) and self.do_munmap(addr, length):
            return ENOMEM
        pages = length >> PAGE_SHIFT
        if not self.may_expand_vm(pages):
            return ENOMEM
        if self.map_count > self.max_map_count:
            return ENOMEM
        if self.enough_memory(pages):
            return ENOMEM
        vma = self.vma_merge(self.vmas.prev_for(addr), addr, end, flags, None, None,
                             addr >> PAGE_SHIFT)
        if vma is None:
            vma = FVma(start=addr, end=end, flags=flags, pgoff=addr >> PAGE_SHIFT, file=None)
            self.link(vma)
        self.total_vm += pages
        self.data_vm += pages
        vma.flags |= VM_SOFTDIRTY
        return addr

    def touch(self, addr: int, write: bool = True) -> int:
        """The VMA-level part of a user fault [4.6: arch/x86/mm/fault.c __do_page_fault,
        access_error; mm/memory.c do_anonymous_page, check_stack_guard_page]: 0, or -EFAULT
        where 4.6 signals; stack growth and anon_vma_prepare before the signal stay.
        [Simplified: as refmodel.vma_calls.touch, the stack pointer is at the fault.]"""
        self._view = None
        addr &= ULONG_MASK
        write = bool(write)
        if addr >= TASK_SIZE:
            return EFAULT
        vma = self.vmas.find_vma(addr)
        if vma is None:
            return EFAULT
        if vma.start > addr and (not vma.flags & VM_GROWSDOWN or self.expand_stack(vma, addr)):
            return EFAULT
        if write and not vma.flags & VM_WRITE:
            return EFAULT
        if not write and not vma.flags & (VM_READ | VM_WRITE | VM_EXEC):
            return EFAULT
        if vma.file is None:
            if self._stack_guard_page(vma, addr) < 0:
                return EFAULT
            if write:
                self.anon_vma_prepare(vma)
            return 0
        if write and not vma.flags & VM_SHARED:
            self.anon_vma_prepare(vma)  # do_cow_fault prepares before it reads the file
        index = ((addr - vma.start) >> PAGE_SHIFT) + vma.pgoff
        if index >= (vma.file.size + PAGE_SIZE - 1) >> PAGE_SHIFT:
            return EFAULT  # SIGBUS: beyond the end of the file
        return 0

    def _stack_guard_page(self, vma: FVma, addr: int) -> int:
        """Touching a stack's lowest page grows it by one more page first."""
        addr &= PAGE_MASK
        if vma.flags & VM_GROWSDOWN and addr == vma.start:
            prev = vma.prev
            if prev is not None and prev.end == addr:
                return 0 if prev.flags & VM_GROWSDOWN else ENOMEM
            return self.expand_downwards(vma, addr - PAGE_SIZE)
        return 0

    # -- set-up ----------------------------------------------------------------------------------

    def dup_mm(self) -> FastAddressSpace | int:
        """[4.6: kernel/fork.c dup_mm, dup_mmap] the child's address space, or -ENOMEM."""
        child = type(self).__new__(type(self))
        FastMm.__init__(child, self.pconf, self.commit if self.shared else None)
        child.config = self.config
        child.capabilities = self.capabilities
        child.next_fd = self.next_fd
        child._view = None
        error = self.dup_mmap(child)
        return error if error else child

    def exit_mmap(self) -> int:
        """[4.6: mm/mmap.c exit_mmap] the space empties and its charges are released."""
        self._view = None
        self.unmap_all()
        return 0

    def open_file(self, size: int, mode: int = O_RDWR) -> int:
        if size < 0 or mode not in (O_RDONLY, O_WRONLY, O_RDWR):
            return EINVAL
        self._view = None
        fd = self.next_fd
        self.next_fd += 1
        self.fds[fd] = self.new_file(fd=fd, size=size, readable=mode != O_WRONLY,
                                     writable=mode != O_RDONLY, shmem=False)
        return fd

    def set_sysctl(self, name: str, value: int) -> int:
        """``write_sysctl`` on the sysctls in force (the machine's when shared)."""
        self._view = None
        return write_sysctl(self.sysctl, name, value)

    # -- views -----------------------------------------------------------------------------------

    def find_vma(self, addr: int) -> VmaView | None:
        vma = self.vmas.find_vma(addr & ULONG_MASK)
        return None if vma is None else vma.view()

    def view(self) -> MmView:
        cached = self._view
        if cached is not None and self.shared:
            # other spaces charge the shared counter and write the shared sysctls
            sysctl = self.sysctl
            if (cached.committed != self.committed
                    or cached.max_map_count != sysctl["max_map_count"]
                    or cached.overcommit_memory != sysctl["overcommit_memory"]
                    or cached.overcommit_ratio != sysctl["overcommit_ratio"]
                    or cached.overcommit_kbytes != sysctl["overcommit_kbytes"]):
                self._view = None
        if self._view is None:
            self._view = MmView(
                vmas=tuple([vma.view() for block in self.vmas.blocks for vma in block.items]),
                files=tuple(self.files[ident].view() for ident in sorted(self.files)),
                map_count=self.map_count, total_vm=self.total_vm, data_vm=self.data_vm,
                exec_vm=self.exec_vm, stack_vm=self.stack_vm, locked_vm=self.locked_vm,
                committed=self.committed, start_brk=self.start_brk, brk=self.brk_value,
                mmap_base=self.mmap_base, max_map_count=self.sysctl["max_map_count"],
                overcommit_memory=self.sysctl["overcommit_memory"],
                overcommit_ratio=self.sysctl["overcommit_ratio"],
                overcommit_kbytes=self.sysctl["overcommit_kbytes"])
        return self._view
