"""fastmodel.tlb is observably identical to refmodel.tlb: same results, views and tables.

Random operation sequences (bad arguments included) run on both models, each over its own
copy of the same tables (walks write ACCESSED and DIRTY into them); after every operation the
results, the views and the tables must be equal.  The state machine's lockstep mode checks
the same thing through the suite; this test is the direct, cheap version.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fastmodel.tlb import FastTlb
from refmodel.tlb import DictTables, RefTlb
from specs.machine import MachineConfig
from specs.pte import PAGE_SIZE
from specs.tlb import TLB_FLUSH_ALL, VM_HUGETLB
from stateful_tests.tlb_machine import (
    EXTRA_BITS,
    KERNEL_BASE,
    PAGE_KERNEL,
    USER_BASE,
    USER_PROTS,
)

CONFIG = MachineConfig(name="three", nr_pages=4096, nr_cpus=3)
cpus = st.integers(0, 2) | st.sampled_from([-1, 3])
mms = st.integers(1, 3) | st.sampled_from([-1, 0])
addresses = st.one_of(
    st.integers(0, 47).map(lambda p: USER_BASE + p * PAGE_SIZE),
    st.integers(0, 15).map(lambda p: KERNEL_BASE + p * PAGE_SIZE),
    st.sampled_from([0, 1 << 47, TLB_FLUSH_ALL, -1, 1 << 64, USER_BASE + 0x800]))
lengths = st.sampled_from([0, 1, 2, 33, 34]).map(lambda n: n * PAGE_SIZE) | st.integers(0, 40
                                                                                          << 12)

operations = st.one_of(
    st.builds(lambda c, m: ("switch_mm", {"cpu": c, "mm": m}), cpus, mms),
    st.builds(lambda c: ("enter_lazy_tlb", {"cpu": c}), cpus),
    st.builds(lambda c, a, w, x: ("access", {"cpu": c, "vaddr": a, "write": w, "exec": x}),
              cpus, addresses, st.booleans(), st.booleans()),
    st.builds(lambda c, m, a, n, h: ("flush_tlb_mm_range", {
        "cpu": c, "mm": m, "start": a, "end": a + n, "vmflag": VM_HUGETLB if h else 0}),
              cpus, mms, addresses, lengths, st.booleans()),
    st.builds(lambda c, m: ("flush_tlb_mm_range", {"cpu": c, "mm": m, "start": 0,
                                                   "end": TLB_FLUSH_ALL}), cpus, mms),
    st.builds(lambda c, m, a: ("flush_tlb_page", {"cpu": c, "mm": m, "vaddr": a}),
              cpus, mms, addresses),
    st.builds(lambda c: ("flush_tlb_all", {"cpu": c}), cpus),
    st.builds(lambda c, a, n: ("flush_tlb_kernel_range", {"cpu": c, "start": a, "end": a + n}),
              cpus, addresses, lengths),
    # a table change (no TLB call): the models must agree on what stays cached regardless
    st.builds(lambda m, p, pfn, prot, x: ("set", {"mm": m, "page": p, "pte": pfn << 12 | prot
                                                  | x}),
              st.integers(1, 3), st.integers(0, 47), st.integers(0, 4095),
              st.sampled_from((0, *USER_PROTS)), st.sampled_from(EXTRA_BITS)),
)


def boot() -> DictTables:
    """Two mms with most pages mapped, and global kernel pages."""
    tables = DictTables()
    for mm in (1, 2):
        for page in range(0, 48, 1 + mm):
            tables.set_pte(mm, USER_BASE + page * PAGE_SIZE,
                           (0x100 * mm + page) << 12 | USER_PROTS[page % len(USER_PROTS)])
    for page in range(0, 16, 2):
        tables.set_pte(0, KERNEL_BASE + page * PAGE_SIZE, (0x40 + page) << 12 | PAGE_KERNEL)
    return tables


@settings(max_examples=150, deadline=None)
@given(st.lists(operations, max_size=60))
def test_fastmodel_matches_refmodel(ops: list[tuple[str, dict[str, Any]]]) -> None:
    """Every result, view and table entry equal after every operation (from a warm start:
    threads of mm 1 on cpu0 and cpu1, mm 2 on cpu2, every third page cached)."""
    ref_tables = boot()
    fast_tables = ref_tables.copy()
    ref, fast = RefTlb(CONFIG, ref_tables), FastTlb(CONFIG, fast_tables)
    warm_up: list[tuple[str, dict[str, Any]]] = [
        ("switch_mm", {"cpu": cpu, "mm": mm}) for cpu, mm in ((0, 1), (1, 1), (2, 2))]
    warm_up += [("access", {"cpu": cpu, "vaddr": USER_BASE + page * PAGE_SIZE, "write": False,
                            "exec": False}) for cpu in range(3) for page in range(0, 48, 3)]
    for op, args in warm_up + ops:
        if op == "set":
            vaddr = USER_BASE + args["page"] * PAGE_SIZE
            for tables in (ref_tables, fast_tables):
                tables.set_pte(args["mm"], vaddr, args["pte"] if args["pte"] >> 12 else 0)
            continue
        assert getattr(ref, op)(**args) == getattr(fast, op)(**args), (op, args)
        assert ref.view() == fast.view(), (op, args)
        assert ref_tables.view() == fast_tables.view(), (op, args)
