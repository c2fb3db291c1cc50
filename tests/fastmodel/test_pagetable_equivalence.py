"""FastPageTables is observably identical to RefPageTables: same results, same views and the
same allocator state after every call of long random call sequences, and the lockstep machine
finds no difference."""

from __future__ import annotations

import random

import pytest

from fastmodel.pagetable import FastPageTables
from refmodel.buddy import RefBuddy
from refmodel.pagetable import RefPageTables
from specs import pte as pt
from specs.machine import preset
from specs.pagetable import PageTables
from vmconform.checking import FAIL, run_check

ANCHORS = (0, 0x400000, 1 << 30, 1 << 39, pt.TASK_SIZE_MAX - (4 << 20))


def random_call(rnd: random.Random, mms: list[int]) -> tuple[str, tuple[int, ...]]:
    """One call with arguments clustered so that tables are shared and freed."""
    def addr() -> int:
        return max(0, rnd.choice(ANCHORS) + rnd.randint(-700, 700) * pt.PAGE_SIZE)
    mm = rnd.choice([*mms, 7]) if mms else 7
    op = rnd.choice(["mm_alloc", "pte_alloc", "pmd_alloc", "pud_alloc", "set_pte_at",
                     "set_pte_at", "ptep_get_and_clear", "ptep_set_wrprotect",
                     "ptep_test_and_clear_young", "ptep_mkclean", "change_protection", "walk",
                     "free_pgtables", "mm_teardown"])
    if op == "mm_alloc":
        return op, ()
    if op == "set_pte_at":
        value = rnd.choice([0, pt.pfn_pte(rnd.randint(0, 5000), rnd.choice(pt.PROTECTION_MAP)),
                            rnd.getrandbits(64)])
        return op, (mm, addr(), value)
    if op == "change_protection":
        start = addr()
        return op, (mm, start, start + rnd.randint(0, 600) * pt.PAGE_SIZE,
                    rnd.choice(pt.PROTECTION_MAP))
    if op == "free_pgtables":
        start = addr()
        end = start + rnd.randint(1, 1200) * pt.PAGE_SIZE
        return op, (mm, start, end, max(0, start - rnd.choice([0, pt.PAGE_SIZE, pt.PMD_SIZE])),
                    rnd.choice([0, end, end + pt.PMD_SIZE, end + pt.PUD_SIZE]))
    if op == "mm_teardown":
        return op, (mm,)
    return op, (mm, addr())


@pytest.mark.parametrize("seed", range(40))
def test_random_calls_agree(seed: int):
    """Every result, view and allocator view agrees after every call of a random sequence."""
    rnd = random.Random(seed)
    config = preset("tiny")
    ref_pages, fast_pages = RefBuddy(config), RefBuddy(config)
    ref, fast = RefPageTables(config, ref_pages), FastPageTables(config, fast_pages)
    for _ in range(150):
        op, args = random_call(rnd, [m.id for m in ref.view().mms])
        if op == "set_pte_at" and rnd.random() < 0.5:
            ref.pte_alloc(args[0], args[1])
            fast.pte_alloc(args[0], args[1])
        assert getattr(ref, op)(*args) == getattr(fast, op)(*args), (op, args)
        assert ref.view() == fast.view(), (op, args)
        assert ref_pages.view() == fast_pages.view(), (op, args)


def test_fastmodel_satisfies_the_protocol():
    """FastPageTables is a PageTables."""
    assert isinstance(FastPageTables(preset("tiny"), RefBuddy(preset("tiny"))), PageTables)


def test_lockstep_machine_finds_no_difference():
    """The lockstep machine (fastmodel against refmodel) passes every check."""
    report = run_check("fastmodel", subsystem="pagetable", mode="lockstep", examples=40)
    assert [] == [(r.id, r.failure.message if r.failure else "") for r in report.results
                  if r.status == FAIL]
