"""Page tables: set_pte_at and walk throughput, and bytes per mapped page, for a 1 GiB mapped
range (262,144 leaf entries), fastmodel beside refmodel in one run.

Issue 3, item 7.  Each implementation gets its own reference page allocator (preset ``tiny``);
the 512 PTE tables are allocated first (untimed), then every page of the range is set to
``pfn_pte(i, PAGE_SHARED)`` (timed), then walked (timed), in address order.  Memory is what
tracemalloc sees the implementation allocate from boot to the end of the set phase, divided by
the number of mapped pages.

    python bench/bench_pagetable.py [--pages 262144]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastmodel.pagetable import FastPageTables
from refmodel.buddy import RefBuddy
from refmodel.pagetable import RefPageTables
from specs import pte as pt
from specs.machine import preset

BASE = 1 << 30


def measure(cls: Any, pages: int) -> dict[str, Any]:
    """Sets/s, walks/s, bytes per mapped page and a checksum of the walk."""
    config = preset("tiny")
    allocator = RefBuddy(config)
    tracemalloc.start()
    start_bytes = tracemalloc.get_traced_memory()[0]
    tables = cls(config, allocator)
    mm = tables.mm_alloc()
    for addr in range(BASE, BASE + pages * pt.PAGE_SIZE, pt.PMD_SIZE):
        assert tables.pte_alloc(mm, addr) == 0
    values = [pt.pfn_pte(i, pt.PAGE_SHARED) for i in range(pages)]
    values_bytes = tracemalloc.get_traced_memory()[0]
    set_pte_at = tables.set_pte_at
    began = time.perf_counter()
    for i in range(pages):
        set_pte_at(mm, BASE + (i << pt.PAGE_SHIFT), values[i])
    set_seconds = time.perf_counter() - began
    del values
    state_bytes = tracemalloc.get_traced_memory()[0] - start_bytes
    tracemalloc.stop()
    walk = tables.walk
    began = time.perf_counter()
    checksum = 0
    for i in range(pages):
        checksum ^= walk(mm, BASE + (i << pt.PAGE_SHIFT))[1]
    walk_seconds = time.perf_counter() - began
    del values_bytes
    return {"set": pages / set_seconds, "walk": pages / walk_seconds,
            "bytes": state_bytes / pages, "checksum": checksum}


def main() -> None:
    """Run both, print a table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1 << 18)
    args = parser.parse_args()
    ref = measure(RefPageTables, args.pages)
    fast = measure(FastPageTables, args.pages)
    print(f"{args.pages} pages ({args.pages * pt.PAGE_SIZE >> 20} MiB mapped)")
    print(f"{'implementation':<12} {'set/s':>12} {'walk/s':>12} {'bytes/page':>11}")
    for name, row in (("refmodel", ref), ("fastmodel", fast)):
        print(f"{name:<12} {row['set']:>12,.0f} {row['walk']:>12,.0f} {row['bytes']:>11.1f}")
    print(f"ratio fast/ref: set {fast['set'] / ref['set']:.2f}x, walk "
          f"{fast['walk'] / ref['walk']:.2f}x, memory {ref['bytes'] / fast['bytes']:.1f}x "
          f"smaller; same walk results: {ref['checksum'] == fast['checksum']}")


if __name__ == "__main__":
    main()
