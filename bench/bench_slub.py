"""kmalloc/kfree pairs per second: fastmodel against refmodel, side by side in one run.

Each implementation is booted on the same preset with its own page allocator and runs the
same seeded stream of kmalloc/kfree pairs (sizes across the kmalloc classes, a held pool so
slabs fill, go partial and are discarded).  Until ``fastmodel/slub.py`` exists only refmodel
is measured and the ratio column says so.

    python bench/bench_slub.py [--pairs 200000] [--pool 256] [--preset tiny]
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from refmodel.buddy import RefBuddy
from specs import gfp
from specs.machine import preset

SIZES = (8, 16, 32, 64, 96, 100, 128, 192, 200, 256, 512, 1000, 2048, 4096, 8192)
IMPLEMENTATIONS = {"refmodel": "refmodel.slub:RefSlub", "fastmodel": "fastmodel.slub:FastSlub"}


def load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def run(factory: Any, preset_name: str, pairs: int, pool: int, seed: int) -> tuple[float, int]:
    """Seconds for ``pairs`` kmalloc/kfree pairs, and a digest of every address returned."""
    config = preset(preset_name)
    slub = factory(config, RefBuddy(config))
    rng = random.Random(seed)
    held: list[int] = []
    digest = 0
    started = time.perf_counter()
    for _ in range(pairs):
        obj = slub.kmalloc(rng.choice(SIZES), gfp.GFP_KERNEL, rng.randrange(config.nr_cpus))
        if obj is not None:
            held.append(obj)
            digest = (digest * 31 + obj) & 0xFFFFFFFFFFFF
        victim = held.pop(rng.randrange(len(held))) if len(held) > pool else None
        if victim is not None:
            slub.kfree(victim, rng.randrange(config.nr_cpus))
    elapsed = time.perf_counter() - started
    return elapsed, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--pool", type=int, default=256)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {}
    for name, path in IMPLEMENTATIONS.items():
        try:
            factory = load(path)
        except (ImportError, AttributeError):
            print(f"{name:10s} not available ({path})")
            continue
        results[name] = run(factory, args.preset, args.pairs, args.pool, args.seed)
    ref = results.get("refmodel")
    for name, (seconds, digest) in results.items():
        rate = args.pairs / seconds
        ratio = f"{ref[0] / seconds:.2f}x refmodel" if ref and name != "refmodel" else "-"
        same = "same results" if ref and digest == ref[1] else "DIFFERENT results"
        print(f"{name:10s} {rate:12,.0f} pairs/s   {ratio:18s} {same}")


if __name__ == "__main__":
    main()
