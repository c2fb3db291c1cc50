"""mmap/munmap/mprotect throughput of address-space implementations at 1,000 and 60,000 VMAs.

Issue 4, item 8: fastmodel against refmodel, side by side in one run, as ratios.  Any
``module:factory`` can be measured (``--impl``); the first one named is the baseline the
ratios are taken against.

Set-up: N one-page private mappings placed with MAP_FIXED at 0x1000_0000_0000, protections
alternating so that none merge (N VMAs, no gaps), far below mmap_base so that a top-down
placement finds room at once.  Then, timed, with the VMA count returning to N after each pair:

* ``mmap+munmap``: a non-fixed one-page mapping (top-down, below mmap_base), then its munmap;
* ``munmap+mmap``: unmap one page of the packed region, then map it back with MAP_FIXED;
* ``mprotect x2``: change one page's protection (it merges with both neighbours: case 6),
  then change it back (two splits);
* ``packed mmap+munmap``: the same non-fixed pair after the N VMAs have been packed right
  below mmap_base instead, so that top-down placement must pass all of them: the case 4.6's
  augmented rbtree (rb_subtree_gap) exists for.

    python bench/bench_vma.py                       # refmodel vs fastmodel, 1,000 and 60,000
    python bench/bench_vma.py --vmas 1000 --pairs 2000
    python bench/bench_vma.py --impl refmodel.vma:RefAddressSpace --impl mypkg:Space
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specs.machine import PAGE_SIZE, preset  # noqa: E402
from specs.vma import (  # noqa: E402
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    process_config,
)

REGION = 0x1000_0000_0000
RW, R = PROT_READ | PROT_WRITE, PROT_READ
FIXED = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
DEFAULT_IMPLS = ("refmodel.vma:RefAddressSpace", "fastmodel.vma:FastAddressSpace")


def load(path: str) -> Callable[..., Any]:
    module, _, attr = path.partition(":")
    factory: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return factory


def prot_of(i: int) -> int:
    return RW if i % 2 else R


def build(factory: Callable[..., Any], vmas: int, packed: bool = False) -> Any:
    config = preset("small")
    space = factory(config)
    base = process_config(config).mmap_base - vmas * PAGE_SIZE if packed else REGION
    for i in range(vmas):
        assert space.mmap(base + i * PAGE_SIZE, PAGE_SIZE, prot_of(i), FIXED) > 0
    assert space.view().map_count == vmas + 1  # and the exec stack
    return space


def mmap_munmap(space: Any, _i: int) -> None:
    addr = space.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    space.munmap(addr, PAGE_SIZE)


def munmap_mmap(space: Any, i: int) -> None:
    addr = REGION + i * PAGE_SIZE
    space.munmap(addr, PAGE_SIZE)
    space.mmap(addr, PAGE_SIZE, prot_of(i), FIXED)


def mprotect_twice(space: Any, i: int) -> None:
    addr = REGION + i * PAGE_SIZE
    space.mprotect(addr, PAGE_SIZE, prot_of(i + 1))
    space.mprotect(addr, PAGE_SIZE, prot_of(i))


OPS: dict[str, Callable[[Any, int], None]] = {
    "mmap+munmap": mmap_munmap, "munmap+mmap": munmap_mmap, "mprotect x2": mprotect_twice,
    "packed mmap+munmap": mmap_munmap}
#: how many pairs of the packed case run, at most (refmodel walks every VMA per call)
PACKED_PAIRS = 200


def measure(factory: Callable[..., Any], vmas: int, pairs: int, seed: int) -> dict[str, float]:
    """Pairs per second for each operation (the same random pages for every implementation)."""
    space = build(factory, vmas)
    rates = {}
    for name, op in OPS.items():
        if name.startswith("packed"):
            space = build(factory, vmas, packed=True)
        rng = random.Random(seed)
        count = min(pairs, PACKED_PAIRS) if name.startswith("packed") else pairs
        pages = [rng.randrange(1, vmas - 1) for _ in range(count)]
        started = time.perf_counter()
        for i in pages:
            op(space, i)
        rates[name] = count / (time.perf_counter() - started)
        assert space.view().map_count == vmas + 1
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", action="append", help="module:factory (repeatable)")
    parser.add_argument("--vmas", type=int, action="append", help="VMA counts (repeatable)")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    impls = args.impl or list(DEFAULT_IMPLS)
    counts = args.vmas or [1000, 60000]
    print(f"{'VMAs':>7} {'operation':<20} " + " ".join(f"{p.split(':')[1]:>22}" for p in impls)
          + "   ratio")
    for vmas in counts:
        results = []
        for path in impls:
            try:
                results.append(measure(load(path), vmas, args.pairs, args.seed))
            except (ImportError, AttributeError) as exc:
                print(f"skipping {path}: {exc}")
                results.append({})
        for name in OPS:
            rates = [r.get(name, 0.0) for r in results]
            cells = " ".join(f"{rate:>16,.0f} pairs/s" for rate in rates)
            base = rates[0]
            ratios = " ".join(f"{rate / base:.1f}x" for rate in rates[1:] if base)
            print(f"{vmas:>7} {name:<20} {cells}   {ratios}")


if __name__ == "__main__":
    main()
