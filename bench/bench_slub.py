"""kmalloc/kfree pairs per second: fastmodel against refmodel, side by side in one run.

Each implementation is booted on the same preset with its own reference page allocator and
runs the same stream of operations, drawn from one seed before the clock starts.  The two are
run alternately ``--repeat`` times and the best time of each is kept, so a noisy neighbour
slows both alike.  Three workloads:

* ``pairs``: kmalloc/kfree pairs, sizes across the kmalloc classes, a held pool so slabs fill,
  go partial, move through the CPU partial lists and are discarded (issue 6, item 8);
* ``debug``: kmem_cache_alloc/kmem_cache_free pairs on caches created with
  SLAB_RED_ZONE | SLAB_POISON | SLAB_CONSISTENCY_CHECKS, where every call runs 4.6's checks
  over the object's red zones, poison and padding;
* ``views``: one pair then one ``view()``, with many caches populated (what a lockstep
  machine does after every call).

    python bench/bench_slub.py [--pairs 100000] [--pool 256] [--preset tiny] [--repeat 3]
                               [--workload pairs debug views]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from refmodel.buddy import RefBuddy
from specs import gfp
from specs import slub as sl
from specs.machine import preset

SIZES = (8, 16, 32, 64, 96, 100, 128, 192, 200, 256, 512, 1000, 2048, 4096, 8192)
DEBUG_FLAGS = sl.SLAB_RED_ZONE | sl.SLAB_POISON | sl.SLAB_CONSISTENCY_CHECKS
DEBUG_SIZES = (24, 100, 700, 3000)
VIEW_CACHES = 40
IMPLEMENTATIONS = {"refmodel": "refmodel.slub:RefSlub", "fastmodel": "fastmodel.slub:FastSlub"}
#: the share of each workload's pair count it runs (debug and views are far slower per pair)
SHARE = {"pairs": 1.0, "debug": 0.1, "views": 0.02}

Stream = list[tuple[int, int, int, int]]


def load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def stream(seed: int, pairs: int, choices: int, cpus: int) -> Stream:
    """(choice, alloc cpu, victim draw, free cpu) per pair, drawn before timing."""
    rng = random.Random(seed)
    return [(rng.randrange(choices), rng.randrange(cpus), rng.getrandbits(30), rng.randrange(cpus))
            for _ in range(pairs)]


def run_pairs(slub: Any, ops: Stream, pool: int) -> tuple[float, int]:
    """kmalloc/kfree pairs: seconds, and a digest of every address returned."""
    held: list[int] = []
    digest = 0
    kmalloc, kfree = slub.kmalloc, slub.kfree
    started = time.perf_counter()
    for choice, cpu, victim, free_cpu in ops:
        obj = kmalloc(SIZES[choice], gfp.GFP_KERNEL, cpu)
        if obj is not None:
            held.append(obj)
            digest = (digest * 31 + obj) & 0xFFFFFFFFFFFF
        if len(held) > pool:
            kfree(held.pop(victim % len(held)), free_cpu)
    return time.perf_counter() - started, digest


def run_debug(slub: Any, ops: Stream, pool: int) -> tuple[float, int]:
    """kmem_cache_alloc/free pairs on debug caches: seconds and a digest of the addresses."""
    caches = [slub.kmem_cache_create(f"dbg{size}", size, 0, DEBUG_FLAGS) for size in DEBUG_SIZES]
    held: list[tuple[int, int]] = []
    digest = 0
    alloc, free = slub.kmem_cache_alloc, slub.kmem_cache_free
    started = time.perf_counter()
    for choice, cpu, victim, free_cpu in ops:
        cache = caches[choice % len(caches)]
        obj = alloc(cache, gfp.GFP_KERNEL, cpu)
        if obj is not None:
            held.append((cache, obj))
            digest = (digest * 31 + obj) & 0xFFFFFFFFFFFF
        if len(held) > pool:
            owner, gone = held.pop(victim % len(held))
            free(owner, gone, free_cpu)
    return time.perf_counter() - started, digest


def run_views(slub: Any, ops: Stream, pool: int) -> tuple[float, int]:
    """A pair then a view, with VIEW_CACHES caches holding pool objects each (set up untimed)."""
    caches = [slub.kmem_cache_create(f"v{i}", 40 + 8 * i, 0, 0) for i in range(VIEW_CACHES)]
    held: list[list[int]] = [[slub.kmem_cache_alloc(c, gfp.GFP_KERNEL, 0) for _ in range(pool)]
                             for c in caches]
    digest = 0
    started = time.perf_counter()
    for choice, cpu, victim, free_cpu in ops:
        index = choice % len(caches)
        objs = held[index]
        obj = slub.kmem_cache_alloc(caches[index], gfp.GFP_KERNEL, cpu)
        objs.append(obj)
        slub.kmem_cache_free(caches[index], objs.pop(victim % len(objs)), free_cpu)
        digest = (digest * 31 + len(slub.view().caches[index].slabs)) & 0xFFFFFFFFFFFF
    return time.perf_counter() - started, digest


WORKLOADS: dict[str, tuple[Callable[[Any, Stream, int], tuple[float, int]], int]] = {
    "pairs": (run_pairs, len(SIZES)), "debug": (run_debug, len(DEBUG_SIZES)),
    "views": (run_views, VIEW_CACHES),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--pool", type=int, default=256)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workload", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    args = parser.parse_args()
    config = preset(args.preset)
    factories = {}
    for name, path in IMPLEMENTATIONS.items():
        try:
            factories[name] = load(path)
        except (ImportError, AttributeError):
            print(f"{name:10s} not available ({path})")
    for workload in args.workload:
        body, choices = WORKLOADS[workload]
        pairs = max(1, int(args.pairs * SHARE[workload]))
        ops = stream(args.seed, pairs, choices, config.nr_cpus)
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeat):
            for name, factory in factories.items():
                seconds, digest = body(factory(config, RefBuddy(config)), ops, args.pool)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, digest)
        ref = best.get("refmodel")
        print(f"{workload}: {pairs:,} pairs, pool {args.pool}, preset {args.preset}, "
              f"best of {args.repeat}")
        for name, (seconds, digest) in best.items():
            ratio = f"{ref[0] / seconds:.2f}x refmodel" if ref and name != "refmodel" else "-"
            same = "same results" if ref and digest == ref[1] else "DIFFERENT results"
            print(f"  {name:10s} {pairs / seconds:12,.0f} pairs/s   {ratio:18s} {same}")


if __name__ == "__main__":
    main()
