"""Simulate a machine: fastmodel against refmodel at 1M and 4M pages, one run, as ratios.

Goal (issue requirement a): build the allocator for 1M pages (4 GiB) and for 4M pages (16 GiB),
run 1M mixed alloc/free operations (orders weighted toward 0, some high orders, several
migratetypes), and run every invariant checker every 10,000 operations; report wall time and
peak memory of fastmodel and refmodel and their ratios, with the per-operation cost separately.
Targets: fastmodel >= 10x faster overall and <= 1/10 of refmodel's memory at 4M pages;
refmodel with no per-operation O(N) scans (its us/op must not grow with the machine).

Each implementation runs in its own subprocess (``--worker``), so ``ru_maxrss`` minus the
baseline taken after imports is that implementation's peak alone.  Both replay the same seeded
operation stream; which held block a free picks depends on earlier results, so the streams are
identical exactly when the results are, and the run checks that with a digest of every result.

    python bench/bench_buddy_scale.py                  # 1M and 4M pages, 1M ops (minutes)
    python bench/bench_buddy_scale.py --quick          # seconds: small machines, 20k ops
    python bench/bench_buddy_scale.py --pages 4M --ops 200k --check-every 0
"""

from __future__ import annotations

import argparse
import array
import gc
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import attrs  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from specs import gfp  # noqa: E402
from specs.buddy import PageState  # noqa: E402
from specs.machine import MachineConfig, x86_64  # noqa: E402

try:  # the invariant registry; without it the hook only takes the snapshots
    import invariants
    from invariants.ledger import Ledger
    from invariants.snapshot import BuddySnapshot
except ImportError:
    invariants = None  # type: ignore[assignment]

IMPLS = {"ref": "refmodel.buddy:RefBuddy", "fast": "fastmodel.buddy:FastBuddy"}
MASK64 = (1 << 64) - 1

# -- the operation mix ----------------------------------------------------------------------

#: (order, weight): mostly order 0, the costly orders 1-3 (slab, stacks), a tail up to THP
#: (order 9) and the largest blocks.
ORDER_WEIGHTS = ((0, 700), (1, 80), (2, 60), (3, 60), (4, 30), (5, 10), (6, 10), (7, 10),
                 (8, 10), (9, 25), (10, 5))
#: (mask, weight) for ordinary allocations: unmovable, movable, reclaimable, atomic, DMA32.
MASK_WEIGHTS = ((gfp.GFP_KERNEL, 300), (gfp.GFP_HIGHUSER_MOVABLE, 400), (gfp.GFP_TEMPORARY, 100),
                (gfp.GFP_ATOMIC, 80), (gfp.GFP_NOWAIT, 20), (gfp.GFP_DMA32 | gfp.GFP_KERNEL, 30),
                (gfp.GFP_KERNEL | gfp.__GFP_COLD, 20), (gfp.GFP_KERNEL | gfp.__GFP_NOWARN, 50))
#: held pages the stream aims at, as a share of memory (allocations run ahead below it)
TARGET_OCCUPANCY = 0.9
DRAIN_SHARE = 0.001  # drain_pages on a random CPU
TAIL_PUT_SHARE = 0.3  # a compound page is released by put_page on one of its pages


#: operations whose random numbers are drawn at once
RANDOM_BLOCK = 10_000


def _distribution(pairs: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """(values, probabilities) for numpy's Generator.choice."""
    values = np.array([value for value, _ in pairs], dtype=np.int64)
    weights = np.array([weight for _, weight in pairs], dtype=np.float64)
    return values, weights / weights.sum()


def machine(nr_pages: int, nr_cpus: int) -> MachineConfig:
    """An x86-64 machine with 4.6's zone boundaries and tunables (the `large` preset at 4M)."""
    kib = nr_pages * 4
    size = f"{kib / 2**20:g} GiB" if kib >= 2**20 else f"{kib / 2**10:g} MiB"
    return x86_64(size, nr_pages, nr_cpus)


# -- the invariant hook ---------------------------------------------------------------------


def run_checkers(impl: Any, held: array.array[int] | None = None) -> dict[str, Any]:
    """Run every invariant checker on impl's current state.

    Uses the registry in ``invariants/``: every registered buddy state invariant that the
    implementation's capabilities allow, on one ``BuddySnapshot``.  Without the registry it
    takes ``view()`` and ``page_state()`` and reads every page field through numpy.  ``held``
    (the stream's packed record of held blocks, see :func:`worker`) becomes the caller's
    ledger for the checkers that need one, built from arrays as a caller holding this many
    blocks would.

    Returns seconds spent taking the snapshot (``view()`` and ``page_state()``: the part that
    only the implementation does), seconds in the checkers proper (their own work, the same
    code for both, including reading page_state fields, which costs what the
    implementation's fields cost to read), the number of checks run and the problems they
    reported.
    """
    start = time.perf_counter()
    view = impl.view()
    pages = impl.page_state()
    snapshot_s = time.perf_counter() - start
    start = time.perf_counter()
    if invariants is None:
        for field in attrs.fields(PageState):
            np.asarray(getattr(pages, field.name))
        return {"snapshot_s": snapshot_s, "checkers_s": time.perf_counter() - start,
                "checks": 0, "problems": []}
    snap = BuddySnapshot(impl=impl, view=view, ledger=_ledger(held))
    snap.pages = pages  # the cached property, already taken
    problems: list[str] = []
    checks = 0
    for check in _state_checks(invariants):
        if not check.applies_to(impl.capabilities):
            continue
        if check.needs_ledger and snap.ledger is None:
            continue
        checks += 1
        problems += [f"{check.id}: {problem}" for problem in check.fn(snap)]
    return {"snapshot_s": snapshot_s, "checkers_s": time.perf_counter() - start,
            "checks": checks, "problems": problems}


def _ledger(held: array.array[int] | None) -> Any:
    """The ledger of the packed held blocks (pfn << 5 | order << 1 | compound)."""
    if held is None or invariants is None:
        return None
    packed = np.frombuffer(held, dtype=np.int64) if len(held) else np.zeros(0, np.int64)
    return Ledger.from_arrays(packed >> 5, packed >> 1 & 15, (packed & 1).astype(bool))


def _state_checks(invariants: Any) -> list[Any]:
    """Every registered buddy state invariant (step rules judge single operations instead)."""
    checks = invariants.checks_for("buddy")
    return [c for c in checks if getattr(c.kind, "value", c.kind) == "state"]


# -- one implementation, in its own process -------------------------------------------------


def rss_now() -> int:
    """Resident set size in bytes, now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """ru_maxrss in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(impl_name: str, nr_pages: int, nr_cpus: int, ops: int, seed: int,
           check_every: int) -> dict[str, Any]:
    """Boot one implementation, run the stream, check every check_every ops; the figures."""
    module_name, class_name = IMPLS[impl_name].split(":")
    factory = getattr(importlib.import_module(module_name), class_name)
    if invariants is not None:  # the checkers' imports belong to the baseline
        _state_checks(invariants)
    # So do numpy's random module (loaded on first use) and the stream's generator.
    rng = np.random.default_rng(seed)
    gc.collect()
    base_rss, base_peak = rss_now(), peak_rss()

    config = machine(nr_pages, nr_cpus)
    cpu_start = time.process_time()
    start = time.perf_counter()
    impl = factory(config)
    setup_s = time.perf_counter() - start
    setup_rss = rss_now() - base_rss

    orders, order_p = _distribution(ORDER_WEIGHTS)
    masks, mask_p = _distribution(MASK_WEIGHTS)
    # Held blocks packed as pfn << 5 | order << 1 | compound, 8 bytes each, so the stream's own
    # bookkeeping hardly shows in either implementation's memory.
    held = array.array("q")
    held_pages = 0
    target = int(nr_pages * TARGET_OCCUPANCY)
    digest = 0
    failed = 0
    call_ns = 0
    clock = time.perf_counter_ns
    check_s = snapshot_s = 0.0
    checks = check_runs = 0
    problems: list[str] = []
    comp, transhuge = gfp.__GFP_COMP, gfp.GFP_TRANSHUGE

    start = time.perf_counter()
    step = 0
    while step < ops:
        # The stream's random numbers, drawn a block at a time: per operation a roll (which
        # operation), a CPU, an order and a mask for allocations, and two uniforms (which held
        # block to free and whether through put_page on one of its pages; THP and compound
        # masks for allocations).
        count = min(RANDOM_BLOCK, ops - step)
        draws = zip(rng.random(count).tolist(), rng.integers(0, nr_cpus, count).tolist(),
                    rng.choice(orders, count, p=order_p).tolist(),
                    rng.choice(masks, count, p=mask_p).tolist(), rng.random(count).tolist(),
                    rng.random(count).tolist(), strict=True)
        for roll, cpu, new_order, new_mask, first, second in draws:
            step += 1
            if roll < DRAIN_SHARE:
                began = clock()
                result = impl.drain_pages(cpu)
                call_ns += clock() - began
            elif not held or roll < (0.7 if held_pages < target else 0.3):
                order, mask = new_order, new_mask
                if order == 9 and first < 0.3:
                    mask = transhuge
                elif 1 <= order <= 3 and first < 0.5:
                    mask |= comp
                began = clock()
                result = impl.alloc_pages(mask, order, cpu)
                call_ns += clock() - began
                if result is None:
                    failed += 1
                    result = -1
                else:
                    held.append(result << 5 | order << 1 | bool(order and mask & comp))
                    held_pages += 1 << order
            else:
                index = int(first * len(held))
                packed = held[index]
                held[index] = held[-1]
                held.pop()
                pfn, order, compound = packed >> 5, packed >> 1 & 15, packed & 1
                held_pages -= 1 << order
                if (compound or not order) and second < TAIL_PUT_SHARE:
                    page = pfn + int(second / TAIL_PUT_SHARE * (1 << order))
                    began = clock()
                    result = impl.put_page(page, cpu)
                else:
                    began = clock()
                    result = impl.free_pages(pfn, order, cpu)
                call_ns += clock() - began
                if result != 0:
                    problems.append(f"op {step}: release of held block {pfn}/{order} -> "
                                    f"{result}")
            digest = (digest * 1_000_003 + result + 7) & MASK64
            if check_every and step % check_every == 0:
                began_check = time.perf_counter()
                found = run_checkers(impl, held)
                check_s += time.perf_counter() - began_check
                snapshot_s += found["snapshot_s"]
                checks += found["checks"]
                check_runs += 1
                problems += found["problems"][:5]
    loop_s = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start
    ops_s = loop_s - check_s
    gc.collect()
    return {
        "impl": impl_name, "nr_pages": nr_pages, "ops": ops, "setup_s": setup_s,
        "ops_s": ops_s, "us_per_op": call_ns / ops / 1e3 if ops else 0.0, "check_s": check_s,
        "snapshot_s": snapshot_s, "check_runs": check_runs, "checks": checks,
        "total_s": setup_s + loop_s, "cpu_s": cpu_s, "peak_mb": (peak_rss() - base_peak) / 2**20,
        "setup_mb": setup_rss / 2**20, "end_mb": (rss_now() - base_rss) / 2**20,
        "failed_allocs": failed, "held_blocks": len(held), "held_pages": held_pages,
        "digest": f"{digest:016x}", "problems": problems[:20],
    }


# -- the parent: run both, print the table --------------------------------------------------


def run_worker(impl: str, nr_pages: int, args: argparse.Namespace,
               check_every: int) -> dict[str, Any]:
    """One implementation in a fresh interpreter; its JSON figures."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", impl,
               "--pages", str(nr_pages), "--ops", str(args.ops), "--seed", str(args.seed),
               "--cpus", str(args.cpus), "--check-every", str(check_every)]
    what = f"checks every {check_every:,}" if check_every else "no checks"
    print(f"  {impl:>4} at {nr_pages:,} pages, {what} ...", file=sys.stderr, flush=True)
    out = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{impl} worker failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run_pair(nr_pages: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both implementations at one size: the checked run, then (unless checks are off or
    --no-model-pass) the same stream without checks, whose peak is the allocator's own."""
    results = []
    for impl in ("ref", "fast"):
        if impl not in args.impls:
            continue
        result = run_worker(impl, nr_pages, args, args.check_every)
        model = result
        if args.check_every and args.model_pass:
            model = run_worker(impl, nr_pages, args, 0)
            if model["digest"] != result["digest"]:
                result["problems"].append("the unchecked run gave other results")
        result["model_mb"] = model["peak_mb"]
        result["model_s"] = model["setup_s"] + model["ops_s"]
        results.append(result)
    return results


def count(text: str) -> int:
    """1M, 4M, 200k, 65536 -> ints (K and M are powers of two for pages, of ten for ops)."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1000, "m": 1_000_000, "ki": 1024, "mi": 1 << 20}
    for suffix in ("ki", "mi", "k", "m"):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * scale[suffix])
    return int(text)


def pages_count(text: str) -> int:
    """Page counts: 1M means 1Mi pages (4 GiB)."""
    text = text.strip().lower()
    if text[-1:] in ("k", "m") and not text.endswith(("ki", "mi")):
        text += "i"
    return count(text)


def print_report(results: list[dict[str, Any]], args: argparse.Namespace) -> bool:
    """The table and the goals; False when the two implementations disagreed or a checker
    reported a problem (goals not met are reported, not failed: figures vary by machine)."""
    console = Console(width=None if sys.stdout.isatty() else 150)
    table = Table(title=f"buddy allocator at scale: {args.ops:,} ops, seed {args.seed}, "
                        f"{args.cpus} CPUs, checks every {args.check_every or 'never'}")
    for column in ("machine", "impl", "setup s", "ops s", "us/op", "check s (snapshot)",
                   "total s", "peak MB", "model MB", "failed allocs"):
        table.add_column(column, justify="left" if column in ("machine", "impl") else "right")
    ok = True
    by_size: dict[int, dict[str, dict[str, Any]]] = {}
    for result in results:
        by_size.setdefault(result["nr_pages"], {})[result["impl"]] = result
    for nr_pages, pair in by_size.items():
        label = f"{nr_pages:,} pages, {machine(nr_pages, args.cpus).name}"
        for impl in ("ref", "fast"):
            r = pair.get(impl)
            if r is None:
                continue
            table.add_row(label, impl + "model", f"{r['setup_s']:.3f}", f"{r['ops_s']:.2f}",
                          f"{r['us_per_op']:.2f}",
                          f"{r['check_s']:.2f} ({r['snapshot_s']:.2f})", f"{r['total_s']:.2f}",
                          f"{r['peak_mb']:.1f}", f"{r['model_mb']:.1f}",
                          f"{r['failed_allocs']:,}")
            label = ""
        if len(pair) == 2:
            ref, fast = pair["ref"], pair["fast"]

            def times(key: str, ref: dict[str, Any] = ref, fast: dict[str, Any] = fast) -> str:
                return f"{ref[key] / fast[key]:.1f}x" if fast[key] > 0 else "-"

            def share(key: str, ref: dict[str, Any] = ref, fast: dict[str, Any] = fast) -> str:
                return f"1/{ref[key] / fast[key]:.1f}" if fast[key] > 0 else "-"

            checks = (f"{ref['check_s'] / fast['check_s']:.1f}x ({times('snapshot_s')})"
                      if fast["check_s"] > 0 else "-")
            same = ref["digest"] == fast["digest"]
            table.add_row("", "[bold]ref/fast[/bold]", times("setup_s"), times("ops_s"),
                          times("us_per_op"), checks, times("total_s"), share("peak_mb"),
                          share("model_mb"), "same results" if same else "[red]DIFFER[/red]",
                          end_section=True)
            ok &= same
    console.print(table)
    console.print("us/op: time inside the allocator's calls; check: all invariant checks, in "
                  "brackets view() + page_state() (the rest is the checkers, the same code "
                  "for both, reading each implementation's page fields); peak MB: ru_maxrss "
                  "over the post-import baseline, checks included; model MB: the same stream "
                  "without checks; CPU time: process time of setup and loop.")
    for result in results:
        for problem in result["problems"]:
            console.print(f"[red]{result['impl']} at {result['nr_pages']:,}: {problem}[/red]")
            ok = False
    largest = max(by_size)
    if len(by_size[largest]) == 2:
        ref, fast = by_size[largest]["ref"], by_size[largest]["fast"]

        def verdict(met: bool) -> str:
            return "[green]met[/green]" if met else "[red]NOT met[/red]"

        speed = ref["total_s"] / fast["total_s"]
        model_speed = ref["model_s"] / fast["model_s"]
        own = ((ref["setup_s"] + ref["ops_s"] + ref["snapshot_s"])
               / (fast["setup_s"] + fast["ops_s"] + fast["snapshot_s"]))
        cpu_speed = ref["cpu_s"] / fast["cpu_s"]
        console.print(f"at {largest:,} pages, speed: fastmodel {speed:.1f}x faster overall "
                      f"(goal >= 10x: {verdict(speed >= 10)}); {own:.1f}x on setup + ops + "
                      f"snapshots; {model_speed:.1f}x without checks; {cpu_speed:.1f}x in CPU "
                      f"time (what a busy machine's wall clock misstates)")
        memory = fast["peak_mb"] / ref["peak_mb"]
        model_memory = fast["model_mb"] / ref["model_mb"]
        console.print(f"at {largest:,} pages, memory: fastmodel peak {memory:.3f} of refmodel's "
                      f"with checks (goal <= 0.1: {verdict(memory <= 0.1)}), {model_memory:.3f} "
                      f"for the allocator alone (goal <= 0.1: {verdict(model_memory <= 0.1)})")
    refs = sorted((r["nr_pages"], r["us_per_op"]) for r in results if r["impl"] == "ref")
    if len(refs) >= 2:
        (small, small_us), (large, large_us) = refs[0], refs[-1]
        growth = large_us / small_us if small_us else float("inf")
        console.print(f"refmodel us/op {small_us:.2f} at {small:,} pages, {large_us:.2f} at "
                      f"{large:,}: {growth:.2f}x for {large / small:.0f}x the pages "
                      f"(no per-operation O(N) scan: {verdict(growth < 1.5)})")
    return ok


def main() -> None:
    """Parse arguments; run as the parent (both implementations) or as one worker."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", nargs="+", type=pages_count, default=None,
                        help="machine sizes in pages (1M = 4 GiB); default 1M 4M")
    parser.add_argument("--ops", type=count, default=None, help="operations (default 1M)")
    parser.add_argument("--check-every", type=count, default=None,
                        help="run every invariant checker every N ops (default 10000; 0: never)")
    parser.add_argument("--quick", action="store_true",
                        help="64Ki and 256Ki pages, 20k ops, checks every 2000: seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=8)
    parser.add_argument("--impls", nargs="+", choices=sorted(IMPLS), default=["ref", "fast"])
    parser.add_argument("--no-model-pass", dest="model_pass", action="store_false",
                        help="skip the second, unchecked run that measures the allocator alone")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", choices=sorted(IMPLS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.pages = args.pages or [1 << 16, 1 << 18]
        args.ops = 20_000 if args.ops is None else args.ops
        args.check_every = 2_000 if args.check_every is None else args.check_every
    args.pages = args.pages or [1 << 20, 4 << 20]
    args.ops = 1_000_000 if args.ops is None else args.ops
    args.check_every = 10_000 if args.check_every is None else args.check_every

    if args.worker:
        figures = worker(args.worker, args.pages[0], args.cpus, args.ops, args.seed,
                         args.check_every)
        print(json.dumps(figures))
        return
    results = [result for nr_pages in args.pages for result in run_pair(nr_pages, args)]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    ok = print_report(results, args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
