"""TLB throughput: fastmodel against refmodel, as ratios measured side by side in one run.

Three streams, each replayed on both models over identical tables: ``access`` (loads and
stores from 8 CPUs over 4 mms, mostly hits), ``flush`` (range, page, mm and kernel flushes
around the 33-page ceiling, with refills so there is always something to flush) and ``mixed``
(the two with context switches and lazy mode).  The results of both models are digested and
compared, so a ratio is only printed for identical behaviour.

    python bench/bench_tlb.py              # 200k operations per stream: about a minute
    python bench/bench_tlb.py --ops 20000  # seconds
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

from fastmodel.tlb import FastTlb
from refmodel.tlb import DictTables, RefTlb
from specs.machine import MachineConfig
from specs.pte import PAGE_SIZE
from specs.tlb import TLB_FLUSH_ALL
from stateful_tests.tlb_machine import KERNEL_BASE, PAGE_KERNEL, PAGE_SHARED, USER_BASE

CONFIG = MachineConfig(name="bench", nr_pages=1 << 20, nr_cpus=8)
MMS = 4
PAGES = 512  # user pages per mm (2 MiB)
KPAGES = 256

Op = tuple[str, dict[str, Any]]


def tables() -> DictTables:
    """Every user page of every mm and every kernel page mapped."""
    t = DictTables()
    for mm in range(1, MMS + 1):
        for page in range(PAGES):
            t.set_pte(mm, USER_BASE + page * PAGE_SIZE, (mm << 12 | page) << 12 | PAGE_SHARED)
    for page in range(KPAGES):
        t.set_pte(0, KERNEL_BASE + page * PAGE_SIZE, (0x80000 | page) << 12 | PAGE_KERNEL)
    return t


def stream(kind: str, count: int, seed: int) -> list[Op]:
    """A seeded operation stream; the first operations put a task of an mm on every CPU."""
    rng = random.Random(seed)
    ops: list[Op] = [("switch_mm", {"cpu": c, "mm": 1 + c % MMS}) for c in range(8)]

    def access() -> Op:
        kernel = rng.random() < 0.1
        page = rng.randrange(KPAGES if kernel else PAGES)
        base = KERNEL_BASE if kernel else USER_BASE
        return ("access", {"cpu": rng.randrange(8), "vaddr": base + page * PAGE_SIZE,
                           "write": rng.random() < 0.3, "exec": False})

    def flush() -> Op:
        r = rng.random()
        cpu, mm = rng.randrange(8), 1 + rng.randrange(MMS)
        start = USER_BASE + rng.randrange(PAGES) * PAGE_SIZE
        if r < 0.5:
            pages = rng.choice((1, 2, 8, 32, 33, 34, 64))
            return ("flush_tlb_mm_range", {"cpu": cpu, "mm": mm, "start": start,
                                           "end": start + pages * PAGE_SIZE, "vmflag": 0})
        if r < 0.8:
            return ("flush_tlb_page", {"cpu": cpu, "mm": mm, "vaddr": start})
        if r < 0.9:
            return ("flush_tlb_mm_range", {"cpu": cpu, "mm": mm, "start": 0,
                                           "end": TLB_FLUSH_ALL, "vmflag": 0})
        kstart = KERNEL_BASE + rng.randrange(KPAGES) * PAGE_SIZE
        return ("flush_tlb_kernel_range", {"cpu": cpu, "start": kstart,
                                           "end": kstart + rng.choice((1, 4, 40)) * PAGE_SIZE})

    for _ in range(count):
        r = rng.random()
        if kind == "access" or (kind == "flush" and r < 0.5) or (kind == "mixed" and r < 0.7):
            ops.append(access())
        elif kind == "flush" or r < 0.9:
            ops.append(flush())
        elif r < 0.95:
            ops.append(("switch_mm", {"cpu": rng.randrange(8), "mm": 1 + rng.randrange(MMS)}))
        else:
            ops.append(("enter_lazy_tlb", {"cpu": rng.randrange(8)}))
    return ops


def run(factory: Callable[..., Any], ops: list[Op]) -> tuple[float, str]:
    """Seconds for the stream, and a digest of every result."""
    tlb = factory(CONFIG, tables())
    calls = [(getattr(tlb, op), args) for op, args in ops]
    results = []
    started = time.perf_counter()
    for method, args in calls:
        results.append(method(**args))
    elapsed = time.perf_counter() - started
    digest = hashlib.sha256(repr(results).encode()).hexdigest()[:12]
    digest += hashlib.sha256(repr(tlb.view()).encode()).hexdigest()[:12]
    return elapsed, digest


def main() -> None:
    """Print one row per stream."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'stream':8} {'ops':>8} {'refmodel op/s':>14} {'fastmodel op/s':>15} "
          f"{'ratio':>6}  same results")
    for kind in ("access", "flush", "mixed"):
        ops = stream(kind, args.ops, args.seed)
        ref_s, ref_digest = run(RefTlb, ops)
        fast_s, fast_digest = run(FastTlb, ops)
        print(f"{kind:8} {len(ops):8} {len(ops) / ref_s:14,.0f} {len(ops) / fast_s:15,.0f} "
              f"{ref_s / fast_s:5.2f}x  {'yes' if ref_digest == fast_digest else 'NO'}")


if __name__ == "__main__":
    main()
