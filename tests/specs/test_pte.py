"""The entry helpers of specs/pte.py against 4.6's definitions: round trips, idempotence,
commuting flag changes, and what each helper must leave untouched."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specs import pte as pt

entries = st.integers(0, pt.ENTRY_MASK)
pfns = st.integers(0, pt.MAX_PHYS_PFN)
prots = st.integers(0, pt.ENTRY_MASK).map(lambda v: v & pt.PTE_FLAGS_MASK)

#: modifier -> (the bits it sets, the bits it clears), from 4.6's pgtable.h
MODIFIERS: dict[str, tuple[int, int]] = {
    "pte_mkclean": (0, pt._PAGE_DIRTY),
    "pte_mkold": (0, pt._PAGE_ACCESSED),
    "pte_wrprotect": (0, pt._PAGE_RW),
    "pte_mkexec": (0, pt._PAGE_NX),
    "pte_mkdirty": (pt._PAGE_DIRTY | pt._PAGE_SOFT_DIRTY, 0),
    "pte_mkyoung": (pt._PAGE_ACCESSED, 0),
    "pte_mkwrite": (pt._PAGE_RW, 0),
    "pte_mkhuge": (pt._PAGE_PSE, 0),
    "pte_clrhuge": (0, pt._PAGE_PSE),
    "pte_mkglobal": (pt._PAGE_GLOBAL, 0),
    "pte_clrglobal": (0, pt._PAGE_GLOBAL),
    "pte_mkspecial": (pt._PAGE_SPECIAL, 0),
    "pte_mkdevmap": (pt._PAGE_SPECIAL | pt._PAGE_DEVMAP, 0),
    "pte_mksoft_dirty": (pt._PAGE_SOFT_DIRTY, 0),
    "pte_clear_soft_dirty": (0, pt._PAGE_SOFT_DIRTY),
}


def helper(name: str) -> Callable[[int], int]:
    """The named modifier."""
    fn: Callable[[int], int] = getattr(pt, name)
    return fn


def test_masks_have_4_6_values():
    """The masks are the values 4.6's headers give on x86-64."""
    assert 0x00003FFFFFFFF000 == pt.PTE_PFN_MASK
    assert 0xFFFFC00000000FFF == pt.PTE_FLAGS_MASK
    assert 0x67 == pt._PAGE_TABLE
    assert 0x63 == pt._KERNPG_TABLE
    assert 0x120 == pt.PAGE_NONE
    assert 0x7FFFFFFFF000 == pt.TASK_SIZE_MAX
    assert 0x7BFFC00000000000 == pt.UNDEFINED_PTE_BITS


@pytest.mark.parametrize("name", sorted(MODIFIERS))
@given(value=entries)
def test_modifier_changes_only_its_bits(name: str, value: int):
    """Each modifier sets and clears exactly its bits; every other bit is untouched."""
    sets, clears = MODIFIERS[name]
    assert (value | sets) & ~clears == helper(name)(value)


@pytest.mark.parametrize("name", sorted(MODIFIERS))
@given(value=entries)
def test_modifier_is_idempotent(name: str, value: int):
    """Applying a modifier twice is applying it once."""
    once = helper(name)(value)
    assert once == helper(name)(once)


@given(value=entries, first=st.sampled_from(sorted(MODIFIERS)),
       second=st.sampled_from(sorted(MODIFIERS)))
def test_modifiers_on_different_bits_commute(value: int, first: str, second: str):
    """Two modifiers touching disjoint bits give the same entry in either order."""
    bits = [MODIFIERS[first][0] | MODIFIERS[first][1], MODIFIERS[second][0] | MODIFIERS[second][1]]
    if bits[0] & bits[1]:
        return
    f, g = helper(first), helper(second)
    assert f(g(value)) == g(f(value))


def test_invalid_mkclean_keeps_accessed_and_soft_dirty():
    """pte_mkclean clears DIRTY only (ACCESSED and SOFT_DIRTY stay)."""
    value = pt.pfn_pte(7, pt.PAGE_SHARED | pt._PAGE_DIRTY | pt._PAGE_SOFT_DIRTY)
    clean = pt.pte_mkclean(value)
    assert (True, True, False) == (pt.pte_young(clean), pt.pte_soft_dirty(clean),
                                   pt.pte_dirty(clean))


@given(pfn=pfns, prot=prots)
def test_pfn_pte_round_trips(pfn: int, prot: int):
    """pte_pfn(pfn_pte(pfn, prot)) == pfn and the flags come back as given."""
    value = pt.pfn_pte(pfn, prot)
    assert (pfn, prot) == (pt.pte_pfn(value), pt.pte_flags(value))


@given(pfn=st.integers(pt.MAX_PHYS_PFN + 1, 1 << 52), prot=st.sampled_from(pt.PROTECTION_MAP))
def test_invalid_wide_pfn_spills_into_flag_bits(pfn: int, prot: int):
    """As in 4.6, pfn_pte does not mask the pfn: a wider one spills into the flags."""
    value = pt.pfn_pte(pfn, prot)
    assert ((pfn << pt.PAGE_SHIFT) | prot) & pt.ENTRY_MASK == value
    assert pt.pte_pfn(value) == pfn & pt.MAX_PHYS_PFN


@given(value=entries, prot=prots)
def test_pte_modify_keeps_chg_mask_and_takes_the_rest(value: int, prot: int):
    """pte_modify keeps pfn, PCD, PWT, SPECIAL, A, D, soft-dirty; takes the rest from prot."""
    new = pt.pte_modify(value, prot)
    assert value & pt._PAGE_CHG_MASK == new & pt._PAGE_CHG_MASK
    assert prot & ~pt._PAGE_CHG_MASK == new & ~pt._PAGE_CHG_MASK & pt.ENTRY_MASK
    assert new == pt.pte_modify(new, prot)


@given(value=entries, prot=prots)
def test_pmd_modify_also_keeps_pse(value: int, prot: int):
    """pmd_modify keeps PSE besides pte_modify's bits."""
    assert value & pt._HPAGE_CHG_MASK == pt.pmd_modify(value, prot) & pt._HPAGE_CHG_MASK


@given(value=entries)
def test_predicates_read_their_bits(value: int):
    """Each predicate is its bit (pte_exec and pte_present as 4.6 defines them)."""
    assert bool(value & pt._PAGE_RW) == pt.pte_write(value)
    assert bool(value & pt._PAGE_DIRTY) == pt.pte_dirty(value)
    assert bool(value & pt._PAGE_ACCESSED) == pt.pte_young(value)
    assert (not value & pt._PAGE_NX) == pt.pte_exec(value)
    assert bool(value & (pt._PAGE_PRESENT | pt._PAGE_PROTNONE)) == pt.pte_present(value)
    assert (value == 0) == pt.pte_none(value)
    assert not pt.pte_protnone(value)


def test_protnone_entry_is_present_but_not_hardware_present():
    """PAGE_NONE has PROTNONE, not PRESENT: pte_present is still true."""
    value = pt.pfn_pte(5, pt.PAGE_NONE)
    assert pt.pte_present(value)
    assert not value & pt._PAGE_PRESENT


@given(pfn=pfns)
def test_table_entries_are_good_at_every_level(pfn: int):
    """What p?d_populate stores is present and not bad at every level."""
    value = pt.mk_table_entry(pfn)
    assert not (pt.pgd_bad(value))
    assert not (pt.pud_bad(value))
    assert not (pt.pmd_bad(value))
    assert pt.pgd_present(value)
    assert pt.pud_present(value)
    assert pt.pmd_present(value)
    assert pfn == pt.pgd_pfn(value) == pt.pud_pfn(value) == pt.pmd_pfn(value)


def test_invalid_pud_bad_differs_from_pmd_bad():
    """pud_bad only rejects flags outside _KERNPG_TABLE|USER (the notes had pmd_bad's rule)."""
    value = pt.pfn_pte(9, pt._PAGE_PRESENT)
    assert (False, True) == (pt.pud_bad(value), pt.pmd_bad(value))
    assert pt.pud_bad(pt.pfn_pte(9, pt._PAGE_PRESENT | pt._PAGE_NX))


@given(pfn=st.integers(0, pt.MAX_PHYS_PFN >> 9))
def test_huge_pmd_reads_the_2mib_pfn(pfn: int):
    """A PSE PMD's pfn uses the 2 MiB mask: PAT_LARGE (bit 12) is a flag there."""
    value = pt.pfn_pmd(pfn << 9, pt.PAGE_SHARED | pt._PAGE_PSE | pt._PAGE_PAT_LARGE)
    assert pfn << 9 == pt.pmd_pfn(value)
    assert pt.pmd_large(value)
    assert pt.pmd_trans_huge(value)
    assert not pt.pmd_trans_huge(pt.pte_mkdevmap(value))


@given(addr=st.integers(0, pt.TASK_SIZE_MAX - 1))
def test_indices_rebuild_the_address(addr: int):
    """The four indices and the page offset put the address back together."""
    rebuilt = ((pt.pgd_index(addr) << pt.PGDIR_SHIFT) | (pt.pud_index(addr) << pt.PUD_SHIFT)
               | (pt.pmd_index(addr) << pt.PMD_SHIFT) | (pt.pte_index(addr) << pt.PAGE_SHIFT)
               | (addr & (pt.PAGE_SIZE - 1)))
    assert addr == rebuilt
    assert pt.pgd_index(addr) < pt.KERNEL_PGD_BOUNDARY


@pytest.mark.parametrize(("addr", "canonical"), [
    (0, True), (pt.TASK_SIZE_MAX, True), (1 << 47, False), (0xFFFF800000000000, True),
    (0xFFFF7FFFFFFFFFFF, False), (pt.ENTRY_MASK, True), (-1, False), (1 << 64, False)])
def test_canonical_addresses(addr: int, canonical: bool):
    """Bits 63..47 must all equal bit 47."""
    assert canonical == pt.is_canonical(addr)


@given(value=entries)
def test_leaf_entry_refused_exactly_for_undefined_bits(value: int):
    """set_pte_at's refusal test is exactly "an undefined bit is set"."""
    assert bool(value & pt.UNDEFINED_PTE_BITS) == pt.leaf_entry_refused(value)
