"""x86-64 page-table entry encoding of 4.6: bit positions, masks and the layout constants.

Vocabulary shared by the page-table and TLB contracts (``specs/pagetable.md``,
``specs/tlb.md``).  [4.6: arch/x86/include/asm/pgtable_types.h, pgtable_64_types.h]
"""

from __future__ import annotations

from typing import Final

# -- layout: 4 levels, 512 eight-byte entries per 4 KiB table ---------------------------------
PAGE_SHIFT: Final = 12
PMD_SHIFT: Final = 21
PUD_SHIFT: Final = 30
PGDIR_SHIFT: Final = 39
PTRS_PER_PTE: Final = 512
PTRS_PER_PMD: Final = 512
PTRS_PER_PUD: Final = 512
PTRS_PER_PGD: Final = 512
PAGE_SIZE: Final = 1 << PAGE_SHIFT
PMD_SIZE: Final = 1 << PMD_SHIFT
PUD_SIZE: Final = 1 << PUD_SHIFT
PGDIR_SIZE: Final = 1 << PGDIR_SHIFT

# -- flag bits (one per position; aliases share a bit) ----------------------------------------
_PAGE_PRESENT: Final = 1 << 0
_PAGE_RW: Final = 1 << 1
_PAGE_USER: Final = 1 << 2
_PAGE_PWT: Final = 1 << 3
_PAGE_PCD: Final = 1 << 4
_PAGE_ACCESSED: Final = 1 << 5
_PAGE_DIRTY: Final = 1 << 6
_PAGE_PSE: Final = 1 << 7  # huge leaf in a PMD/PUD
_PAGE_PAT: Final = 1 << 7  # the same bit in a 4 KiB PTE
_PAGE_GLOBAL: Final = 1 << 8  # meaningful while PRESENT is set
_PAGE_PROTNONE: Final = 1 << 8  # the same bit while PRESENT is clear
_PAGE_SPECIAL: Final = 1 << 9  # _PAGE_SOFTW1
_PAGE_SOFTW2: Final = 1 << 10
_PAGE_SOFT_DIRTY: Final = 1 << 11  # _PAGE_SOFTW3
_PAGE_PAT_LARGE: Final = 1 << 12
_PAGE_DEVMAP: Final = 1 << 58  # _PAGE_SOFTW4
_PAGE_NX: Final = 1 << 63

# -- masks --------------------------------------------------------------------------------------
__PHYSICAL_MASK_SHIFT: Final = 46
PHYSICAL_MASK: Final = (1 << __PHYSICAL_MASK_SHIFT) - 1
PAGE_MASK: Final = ~(PAGE_SIZE - 1) & ((1 << 64) - 1)
PTE_PFN_MASK: Final = PAGE_MASK & PHYSICAL_MASK  # 0x00003ffffffff000
PTE_FLAGS_MASK: Final = ~PTE_PFN_MASK & ((1 << 64) - 1)  # 0xffffc00000000fff
ENTRY_MASK: Final = (1 << 64) - 1

# -- composite values ---------------------------------------------------------------------------
_PAGE_TABLE: Final = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY
_KERNPG_TABLE: Final = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY
#: pgd_ctor copies the kernel half (slots 272..511) of swapper_pg_dir into every new PGD.
KERNEL_PGD_BOUNDARY: Final = 272
#: __PHYSICAL_MASK_SHIFT-wide physical addresses: the largest pfn an entry can hold.
MAX_PHYS_PFN: Final = PHYSICAL_MASK >> PAGE_SHIFT
PMD_MASK: Final = ~(PMD_SIZE - 1) & ENTRY_MASK
PUD_MASK: Final = ~(PUD_SIZE - 1) & ENTRY_MASK
PGDIR_MASK: Final = ~(PGDIR_SIZE - 1) & ENTRY_MASK
PHYSICAL_PMD_PAGE_MASK: Final = PMD_MASK & PHYSICAL_MASK  # 0x00003fffffe00000
PHYSICAL_PUD_PAGE_MASK: Final = PUD_MASK & PHYSICAL_MASK  # 0x00003fffc0000000

# -- the address space [4.6: arch/x86/include/asm/processor.h TASK_SIZE_MAX] -------------------
#: 48-bit virtual addresses; the top user page is never mappable.
VIRTUAL_MASK_SHIFT: Final = 47
TASK_SIZE_MAX: Final = (1 << VIRTUAL_MASK_SHIFT) - PAGE_SIZE  # 0x7ffffffff000
FIRST_USER_ADDRESS: Final = 0
#: free_pgtables' ceiling for "the top of the address space" [4.6: include/asm-generic/pgtable.h]
USER_PGTABLES_CEILING: Final = 0

# -- what 4.6 keeps and replaces ----------------------------------------------------------------
#: Bits pte_modify keeps; everything else comes from the new protection.
_PAGE_CHG_MASK: Final = (PTE_PFN_MASK | _PAGE_PCD | _PAGE_PWT | _PAGE_SPECIAL | _PAGE_ACCESSED
                         | _PAGE_DIRTY | _PAGE_SOFT_DIRTY)
_HPAGE_CHG_MASK: Final = _PAGE_CHG_MASK | _PAGE_PSE
#: __supported_pte_mask on a CPU with NX and PGE: nothing is masked off.
SUPPORTED_PTE_MASK: Final = ENTRY_MASK
#: Every bit a 4 KiB leaf entry may carry in this configuration: the twelve low flag bits, the
#: pfn, DEVMAP and NX.  Bits 46..57 (above the physical mask) and 59..62 (protection keys,
#: configured out) are undefined; no table ever holds them (PAGETABLE-I6).
DEFINED_PTE_BITS: Final = (PTE_PFN_MASK | (PAGE_SIZE - 1) | _PAGE_DEVMAP | _PAGE_NX)
UNDEFINED_PTE_BITS: Final = ~DEFINED_PTE_BITS & ENTRY_MASK

# -- user protections [4.6: arch/x86/include/asm/pgtable_types.h PAGE_NONE .. PAGE_COPY_EXEC] ---
PAGE_NONE: Final = _PAGE_PROTNONE | _PAGE_ACCESSED
PAGE_SHARED: Final = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_NX
PAGE_SHARED_EXEC: Final = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED
PAGE_COPY_NOEXEC: Final = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED | _PAGE_NX
PAGE_COPY_EXEC: Final = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED
PAGE_COPY: Final = PAGE_COPY_NOEXEC
PAGE_READONLY: Final = PAGE_COPY_NOEXEC
PAGE_READONLY_EXEC: Final = PAGE_COPY_EXEC
__PAGE_KERNEL_EXEC: Final = _PAGE_PRESENT | _PAGE_RW | _PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_GLOBAL
__PAGE_KERNEL: Final = __PAGE_KERNEL_EXEC | _PAGE_NX
#: vm_flags & (VM_READ|VM_WRITE|VM_EXEC|VM_SHARED) -> vm_page_prot [4.6: mm/mmap.c protection_map]
PROTECTION_MAP: Final = (
    PAGE_NONE, PAGE_READONLY, PAGE_COPY, PAGE_COPY,
    PAGE_READONLY_EXEC, PAGE_READONLY_EXEC, PAGE_COPY_EXEC, PAGE_COPY_EXEC,
    PAGE_NONE, PAGE_READONLY, PAGE_SHARED, PAGE_SHARED,
    PAGE_READONLY_EXEC, PAGE_READONLY_EXEC, PAGE_SHARED_EXEC, PAGE_SHARED_EXEC,
)


# ===============================================================================================
# The helpers.  Entries are Python ints holding the unsigned 64-bit value; every constructor
# truncates to 64 bits as the C types do.  The predicates return the kernel's truth values as
# bool (4.6 returns the masked flag; only its truth is ever used).
# ===============================================================================================

# -- indices [4.6: arch/x86/include/asm/pgtable.h pgd_index, pud_index, pmd_index, pte_index] --


def pgd_index(addr: int) -> int:
    """Slot of ``addr`` in the PGD."""
    return (addr >> PGDIR_SHIFT) & (PTRS_PER_PGD - 1)


def pud_index(addr: int) -> int:
    """Slot of ``addr`` in its PUD page."""
    return (addr >> PUD_SHIFT) & (PTRS_PER_PUD - 1)


def pmd_index(addr: int) -> int:
    """Slot of ``addr`` in its PMD page."""
    return (addr >> PMD_SHIFT) & (PTRS_PER_PMD - 1)


def pte_index(addr: int) -> int:
    """Slot of ``addr`` in its PTE page."""
    return (addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)


def is_canonical(addr: int) -> bool:
    """Bits 63..47 all equal bit 47 (and the value fits in 64 bits)."""
    if not 0 <= addr <= ENTRY_MASK:
        return False
    top = addr >> VIRTUAL_MASK_SHIFT
    return top in (0, (1 << (64 - VIRTUAL_MASK_SHIFT)) - 1)


def is_user_address(addr: int) -> bool:
    """A page a user mm may map: canonical, below TASK_SIZE_MAX."""
    return 0 <= addr < TASK_SIZE_MAX


# -- flags and pfns -----------------------------------------------------------------------------


def pte_flags(pte: int) -> int:
    """Everything but the pfn [4.6: pgtable_types.h pte_flags]."""
    return pte & PTE_FLAGS_MASK


def pte_pfn(pte: int) -> int:
    """The pfn field [4.6: pgtable.h pte_pfn]."""
    return (pte & PTE_PFN_MASK) >> PAGE_SHIFT


def massage_pgprot(prot: int) -> int:
    """Drop unsupported bits from a present protection; non-present ones keep every bit, since
    they carry swap or PROT_NONE encodings [4.6: pgtable.h massage_pgprot]."""
    prot &= ENTRY_MASK
    if prot & _PAGE_PRESENT:
        prot &= SUPPORTED_PTE_MASK
    return prot


def pfn_pte(pfn: int, prot: int) -> int:
    """A leaf entry for ``pfn``.  As in 4.6 the pfn is not masked: bits of a pfn wider than
    the physical mask spill into the high flag bits (PAGETABLE-R4 refuses such entries)
    [4.6: pgtable.h pfn_pte]."""
    return ((pfn << PAGE_SHIFT) | massage_pgprot(prot)) & ENTRY_MASK


def pfn_pmd(pfn: int, prot: int) -> int:
    """The PMD-level twin of pfn_pte [4.6: pgtable.h pfn_pmd]."""
    return ((pfn << PAGE_SHIFT) | massage_pgprot(prot)) & ENTRY_MASK


def pte_same(a: int, b: int) -> bool:
    """Full 64-bit equality, what fault paths use to detect a race [4.6: pgtable.h pte_same]."""
    return a == b


def pte_set_flags(pte: int, flags: int) -> int:
    """[4.6: pgtable.h pte_set_flags]."""
    return (pte | flags) & ENTRY_MASK


def pte_clear_flags(pte: int, flags: int) -> int:
    """[4.6: pgtable.h pte_clear_flags]."""
    return pte & ~flags & ENTRY_MASK


# -- leaf predicates [4.6: arch/x86/include/asm/pgtable.h] --------------------------------------


def pte_none(pte: int) -> bool:
    """The whole value is zero."""
    return pte == 0


def pte_present(pte: int) -> bool:
    """PRESENT or PROTNONE: a PROT_NONE page is still a present page to the VM."""
    return bool(pte & (_PAGE_PRESENT | _PAGE_PROTNONE))


def pte_protnone(pte: int) -> bool:
    """Always false: 4.6 defines the real test only with CONFIG_NUMA_BALANCING, which a
    one-node machine does not have [4.6: include/asm-generic/pgtable.h pte_protnone]."""
    del pte
    return False


def pte_write(pte: int) -> bool:
    """RW set."""
    return bool(pte & _PAGE_RW)


def pte_dirty(pte: int) -> bool:
    """DIRTY set."""
    return bool(pte & _PAGE_DIRTY)


def pte_young(pte: int) -> bool:
    """ACCESSED set."""
    return bool(pte & _PAGE_ACCESSED)


def pte_exec(pte: int) -> bool:
    """NX *clear* (the notes had this backwards; see specs/pagetable.md)."""
    return not pte & _PAGE_NX


def pte_special(pte: int) -> bool:
    """SPECIAL (software bit 1) set."""
    return bool(pte & _PAGE_SPECIAL)


def pte_global(pte: int) -> bool:
    """GLOBAL set."""
    return bool(pte & _PAGE_GLOBAL)


def pte_huge(pte: int) -> bool:
    """PSE set."""
    return bool(pte & _PAGE_PSE)


def pte_devmap(pte: int) -> bool:
    """DEVMAP (software bit 4) set."""
    return bool(pte & _PAGE_DEVMAP)


def pte_soft_dirty(pte: int) -> bool:
    """SOFT_DIRTY (software bit 3) set."""
    return bool(pte & _PAGE_SOFT_DIRTY)


# -- leaf modifiers [4.6: arch/x86/include/asm/pgtable.h] ---------------------------------------


def pte_mkclean(pte: int) -> int:
    """Clear DIRTY only: ACCESSED and SOFT_DIRTY stay."""
    return pte_clear_flags(pte, _PAGE_DIRTY)


def pte_mkold(pte: int) -> int:
    """Clear ACCESSED."""
    return pte_clear_flags(pte, _PAGE_ACCESSED)


def pte_wrprotect(pte: int) -> int:
    """Clear RW."""
    return pte_clear_flags(pte, _PAGE_RW)


def pte_mkexec(pte: int) -> int:
    """Clear NX."""
    return pte_clear_flags(pte, _PAGE_NX)


def pte_mkdirty(pte: int) -> int:
    """Set DIRTY and SOFT_DIRTY together."""
    return pte_set_flags(pte, _PAGE_DIRTY | _PAGE_SOFT_DIRTY)


def pte_mkyoung(pte: int) -> int:
    """Set ACCESSED."""
    return pte_set_flags(pte, _PAGE_ACCESSED)


def pte_mkwrite(pte: int) -> int:
    """Set RW."""
    return pte_set_flags(pte, _PAGE_RW)


def pte_mkhuge(pte: int) -> int:
    """Set PSE."""
    return pte_set_flags(pte, _PAGE_PSE)


def pte_clrhuge(pte: int) -> int:
    """Clear PSE."""
    return pte_clear_flags(pte, _PAGE_PSE)


def pte_mkglobal(pte: int) -> int:
    """Set GLOBAL."""
    return pte_set_flags(pte, _PAGE_GLOBAL)


def pte_clrglobal(pte: int) -> int:
    """Clear GLOBAL."""
    return pte_clear_flags(pte, _PAGE_GLOBAL)


def pte_mkspecial(pte: int) -> int:
    """Set SPECIAL."""
    return pte_set_flags(pte, _PAGE_SPECIAL)


def pte_mkdevmap(pte: int) -> int:
    """Set SPECIAL *and* DEVMAP (the notes said DEVMAP only)."""
    return pte_set_flags(pte, _PAGE_SPECIAL | _PAGE_DEVMAP)


def pte_mksoft_dirty(pte: int) -> int:
    """Set SOFT_DIRTY."""
    return pte_set_flags(pte, _PAGE_SOFT_DIRTY)


def pte_clear_soft_dirty(pte: int) -> int:
    """Clear SOFT_DIRTY."""
    return pte_clear_flags(pte, _PAGE_SOFT_DIRTY)


def pte_modify(pte: int, newprot: int) -> int:
    """Keep the pfn and the _PAGE_CHG_MASK bits (caching, SPECIAL, A, D, soft-dirty); take
    everything else, PRESENT, RW, USER, GLOBAL, PROTNONE and NX included, from ``newprot``."""
    return ((pte & _PAGE_CHG_MASK) | (massage_pgprot(newprot) & ~_PAGE_CHG_MASK)) & ENTRY_MASK


# -- upper levels [4.6: arch/x86/include/asm/pgtable.h, pgtable_types.h] ------------------------


def pmd_pfn_mask(pmd: int) -> int:
    """A huge (PSE) PMD holds a 2 MiB-aligned address; a table pointer a 4 KiB-aligned one."""
    return PHYSICAL_PMD_PAGE_MASK if pmd & _PAGE_PSE else PTE_PFN_MASK


def pmd_flags(pmd: int) -> int:
    """Flags of a PMD entry; for a huge one the low pfn bits are flags (PAT_LARGE)."""
    return pmd & ~pmd_pfn_mask(pmd) & ENTRY_MASK


def pmd_pfn(pmd: int) -> int:
    """[4.6: pgtable.h pmd_pfn]."""
    return (pmd & pmd_pfn_mask(pmd)) >> PAGE_SHIFT


def pud_pfn_mask(pud: int) -> int:
    """As pmd_pfn_mask, for 1 GiB leaves."""
    return PHYSICAL_PUD_PAGE_MASK if pud & _PAGE_PSE else PTE_PFN_MASK


def pud_flags(pud: int) -> int:
    """Flags of a PUD entry."""
    return pud & ~pud_pfn_mask(pud) & ENTRY_MASK


def pud_pfn(pud: int) -> int:
    """[4.6: pgtable.h pud_pfn]."""
    return (pud & pud_pfn_mask(pud)) >> PAGE_SHIFT


def pgd_flags(pgd: int) -> int:
    """Flags of a PGD entry."""
    return pgd & PTE_FLAGS_MASK


def pgd_pfn(pgd: int) -> int:
    """The PUD page a PGD entry points to."""
    return (pgd & PTE_PFN_MASK) >> PAGE_SHIFT


def pmd_none(pmd: int) -> bool:
    """Zero."""
    return pmd == 0


def pmd_present(pmd: int) -> bool:
    """PRESENT, PROTNONE or PSE: a THP being split keeps PSE while PRESENT is clear."""
    return bool(pmd_flags(pmd) & (_PAGE_PRESENT | _PAGE_PROTNONE | _PAGE_PSE))


def pmd_bad(pmd: int) -> bool:
    """The flags, USER aside, are not exactly _KERNPG_TABLE."""
    return (pmd_flags(pmd) & ~_PAGE_USER) != _KERNPG_TABLE


def pmd_large(pmd: int) -> bool:
    """PSE set."""
    return bool(pmd_flags(pmd) & _PAGE_PSE)


def pmd_trans_huge(pmd: int) -> bool:
    """PSE set and DEVMAP clear."""
    return (pmd_flags(pmd) & (_PAGE_PSE | _PAGE_DEVMAP)) == _PAGE_PSE


def pmd_mknotpresent(pmd: int) -> int:
    """Clear PRESENT and PROTNONE."""
    return pmd & ~(_PAGE_PRESENT | _PAGE_PROTNONE) & ENTRY_MASK


def pmd_modify(pmd: int, newprot: int) -> int:
    """pte_modify for a huge PMD: PSE is kept as well."""
    return ((pmd & _HPAGE_CHG_MASK) | (massage_pgprot(newprot) & ~_HPAGE_CHG_MASK)) & ENTRY_MASK


def pud_none(pud: int) -> bool:
    """Zero."""
    return pud == 0


def pud_present(pud: int) -> bool:
    """PRESENT only."""
    return bool(pud_flags(pud) & _PAGE_PRESENT)


def pud_bad(pud: int) -> bool:
    """Only flags outside _KERNPG_TABLE|USER are bad: unlike pmd_bad, nothing is required to
    be set (the notes gave it pmd_bad's rule)."""
    return bool(pud_flags(pud) & ~(_KERNPG_TABLE | _PAGE_USER))


def pud_large(pud: int) -> bool:
    """PSE and PRESENT both set."""
    return (pud & (_PAGE_PSE | _PAGE_PRESENT)) == (_PAGE_PSE | _PAGE_PRESENT)


def pgd_none(pgd: int) -> bool:
    """Zero."""
    return pgd == 0


def pgd_present(pgd: int) -> bool:
    """PRESENT only."""
    return bool(pgd_flags(pgd) & _PAGE_PRESENT)


def pgd_bad(pgd: int) -> bool:
    """The flags, USER aside, are not exactly _KERNPG_TABLE."""
    return (pgd_flags(pgd) & ~_PAGE_USER) != _KERNPG_TABLE


def mk_table_entry(pfn: int) -> int:
    """What pgd_populate, pud_populate and pmd_populate store for a user table: the table's
    physical address with _PAGE_TABLE [4.6: arch/x86/include/asm/pgalloc.h pmd_populate]."""
    return ((pfn << PAGE_SHIFT) & PTE_PFN_MASK) | _PAGE_TABLE


def leaf_entry_refused(pte: int) -> bool:
    """True for a value no table may hold: outside 64 bits, or carrying an undefined bit (a
    pfn wider than the physical mask spills into those) [PAGETABLE-R4]."""
    return not 0 <= pte <= ENTRY_MASK or bool(pte & UNDEFINED_PTE_BITS)
