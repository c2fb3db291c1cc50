"""Faults per second, fork of a 64 MiB process and lockstep steps/s of the composed kernel.

Issue 5, item 7.  There is no fastmodel kernel yet: what is compared is one composition,
``refmodel.kernel.RefKernel``, built on refmodel's parts (the default) and on fastmodel's
parts (FastBuddy, FastPageTables, FastTlb, FastAddressSpace), side by side in one run.  The
fault, COW and fork logic itself (refmodel/fault.py, refmodel/fork.py) is the same Python in
both, so a ratio here measures only what the parts contribute.

Workloads, on the ``small`` preset (65,536 pages, room for 64 MiB = 16,384 pages):

* ``write faults``: one process maps N anonymous pages and writes one byte to each (an
  anonymous write fault allocating a zeroed page, then the store);
* ``zero-page read faults``: it reads one byte of N other pages (each maps the zero page);
* ``fork 64 MiB``: a process maps and writes 16,384 pages, then fork() is timed (every
  anonymous PTE copied and write-protected on both sides);
* ``COW breaks``: the child's first writes to 1,024 of those pages;
* lockstep steps/s of the fault state machine (``stateful_tests.fault_machine``) beside a
  trivial Hypothesis machine, as in ``bench_lockstep_rate.py``.

Before a ratio is printed, each composition's results (every value returned) and its final
``KernelView`` and page contents are digested and compared: a ratio is only shown for
identical behaviour.

    python bench/bench_fault.py                        # about 20 s
    python bench/bench_fault.py --pages 4096 --examples 20
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from bench.bench_lockstep_rate import STEPS, TrivialMachine
from fastmodel.buddy import FastBuddy
from fastmodel.pagetable import FastPageTables
from fastmodel.tlb import FastTlb
from fastmodel.vma import FastAddressSpace
from invariants.registry import LOCKSTEP, PLUGIN, checks_for
from refmodel.kernel import RefKernel
from specs.machine import PAGE_SIZE, MachineConfig, preset
from specs.vma import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from stateful_tests.common import MachineSpec
from stateful_tests.fault_machine import FaultMachineBase, make_fault_machine

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
FORK_PAGES = 16_384  # 64 MiB
COW_PAGES = 1_024
FAST_PARTS: Mapping[str, Callable[..., object]] = {
    "buddy": FastBuddy, "pagetable": FastPageTables, "tlb": FastTlb, "vma": FastAddressSpace}
COMPOSITIONS: dict[str, Mapping[str, Callable[..., object]] | None] = {
    "refmodel parts": None, "fastmodel parts": FAST_PARTS}


class Digest:
    """Every result of a run, hashed, so two compositions can be shown to agree."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def add(self, value: object) -> None:
        self.hash.update(repr(value).encode())

    def final(self, kernel: RefKernel) -> str:
        """Fold in the final composed view and every user page's contents."""
        view = kernel.view()
        self.add(view)
        for page in view.pages:
            self.hash.update(kernel.page_contents(page.pfn))
        return self.hash.hexdigest()[:16]


def boot(parts: Mapping[str, Callable[..., object]] | None) -> tuple[RefKernel, int]:
    """A small machine with one process running on CPU 0."""
    kernel = RefKernel(preset("small"), parts)
    pid = kernel.spawn()
    assert pid > 0
    assert kernel.switch(0, pid) == 0
    return kernel, pid


def timed(label: str, count: int, body: Callable[[], None], rates: dict[str, float]) -> None:
    started = time.perf_counter()
    body()
    rates[label] = count / (time.perf_counter() - started)


def faults(parts: Mapping[str, Callable[..., object]] | None, pages: int,
           rates: dict[str, float]) -> str:
    """Write faults on N pages, then zero-page read faults on N others."""
    kernel, pid = boot(parts)
    digest = Digest()
    written = kernel.mmap(pid, 0, pages * PAGE_SIZE, RW, ANON)
    readonly = kernel.mmap(pid, 0, pages * PAGE_SIZE, RW, ANON)
    digest.add((written, readonly))

    def write() -> None:
        for i in range(pages):
            digest.add(kernel.write(0, written + i * PAGE_SIZE, bytes([i & 0xFF])))

    def read() -> None:
        for i in range(pages):
            digest.add(kernel.read(0, readonly + i * PAGE_SIZE, 1))

    timed("write faults", pages, write, rates)
    timed("zero-page read faults", pages, read, rates)
    return digest.final(kernel)


def fork(parts: Mapping[str, Callable[..., object]] | None, repeats: int,
         rates: dict[str, float]) -> str:
    """fork() of a process with 64 MiB written (the median of ``repeats`` forks, each child
    but the last exiting untimed), then the last child's first writes."""
    kernel, pid = boot(parts)
    digest = Digest()
    base = kernel.mmap(pid, 0, FORK_PAGES * PAGE_SIZE, RW, ANON)
    for i in range(FORK_PAGES):
        digest.add(kernel.write(0, base + i * PAGE_SIZE, bytes([i & 0xFF])))
    forks: list[float] = []
    child = 0
    for attempt in range(repeats):
        started = time.perf_counter()
        child = kernel.fork(pid)
        forks.append(time.perf_counter() - started)
        digest.add(child)
        assert child > 0
        if attempt < repeats - 1:  # the last child stays for the COW breaks
            digest.add(kernel.exit(child))
    rates["fork 64 MiB"] = 1 / statistics.median(forks)
    assert kernel.switch(1, child) == 0

    def cow() -> None:
        for i in range(COW_PAGES):
            digest.add(kernel.write(1, base + i * 16 * PAGE_SIZE, b"\xcc"))

    timed("COW breaks", COW_PAGES, cow, rates)
    # the parent still sees its own bytes where the child broke COW
    digest.add(kernel.read(0, base, 1))
    return digest.final(kernel)


def counting(machine: type[FaultMachineBase]) -> type[FaultMachineBase]:
    """Count kernel calls (steps) and rules, as bench_lockstep_rate counts the buddy's."""
    original = machine.step

    def step(self: FaultMachineBase, op: str, **args: Any) -> Any:
        STEPS["n"] += 1
        return original(self, op, **args)

    original_check = machine.invariants_hold

    def invariants_hold(self: FaultMachineBase) -> None:
        STEPS["rules"] += 1
        original_check(self)

    machine.step = step  # type: ignore[method-assign]
    machine.invariants_hold = invariants_hold  # type: ignore[method-assign]
    return machine


def machine_rate(machine: type[RuleBasedStateMachine], examples: int,
                 steps: int) -> tuple[float, int, float]:
    """(kernel calls per second, calls, rules per second)."""
    run_settings = settings(max_examples=examples, stateful_step_count=steps, database=None,
                            deadline=None, derandomize=True, phases=[Phase.generate],
                            suppress_health_check=list(HealthCheck))
    STEPS["n"] = STEPS["rules"] = 0
    started = time.perf_counter()
    run_state_machine_as_test(machine, settings=run_settings)
    elapsed = time.perf_counter() - started
    return STEPS["n"] / elapsed, STEPS["n"], STEPS["rules"] / elapsed


def lockstep_rows(config: MachineConfig, examples: int, steps: int) -> None:
    enabled = frozenset(c.id for c in checks_for("fault")) | {LOCKSTEP, PLUGIN}
    rows: list[tuple[str, type[RuleBasedStateMachine]]] = [("trivial machine", TrivialMachine)]
    for name, parts in COMPOSITIONS.items():
        def factory(cfg: MachineConfig, parts: Any = parts) -> RefKernel:
            return RefKernel(cfg, parts)
        # one impl_name for both: derandomized Hypothesis then draws the same programs
        spec = MachineSpec(factory=factory, impl_name="RefKernel", mode="lockstep",
                           config=config, enabled=enabled)
        rows.append((f"fault lockstep, {name}", counting(make_fault_machine(spec))))
    print(f"\nstate machines ({examples} examples x <= {steps} steps, {config.name} preset, "
          "all fault checks on, lockstep against RefKernel on refmodel parts)")
    print(f"{'machine':<34} {'calls':>7} {'calls/s':>9} {'ratio':>6} {'rules/s':>9} {'ratio':>6}")
    base = rule_base = 0.0
    for name, machine in rows:
        per_second, count, rules = machine_rate(machine, examples, steps)
        base = base or per_second
        rule_base = rule_base or rules
        print(f"{name:<34} {count:>7,} {per_second:>9,.0f} {per_second / base:>6.2f} "
              f"{rules:>9,.0f} {rules / rule_base:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=16_384,
                        help="pages per fault workload (write, then read)")
    parser.add_argument("--forks", type=int, default=5, help="timed forks (median shown)")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--machine-preset", default="tiny")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    digests: dict[str, tuple[str, str]] = {}
    for name, parts in COMPOSITIONS.items():
        rates: dict[str, float] = {}
        digests[name] = (faults(parts, args.pages, rates), fork(parts, args.forks, rates))
        results[name] = rates
    names = list(COMPOSITIONS)
    same = len(set(digests.values())) == 1
    print("RefKernel, small preset; digests: "
          + ", ".join(f"{n} {d[0]}/{d[1]}" for n, d in digests.items())
          + (" (identical)" if same else " (DIFFER: no ratio)"))
    print(f"{'workload':<24} " + " ".join(f"{n:>20}" for n in names) + "   ratio")
    for label in results[names[0]]:
        rates_row = [results[n][label] for n in names]
        if label.startswith("fork"):  # one call: show its time
            cells = " ".join(f"{1000 / r:>17,.1f} ms" for r in rates_row)
        else:
            cells = " ".join(f"{r:>18,.0f}/s" for r in rates_row)
        ratio = f"{rates_row[1] / rates_row[0]:.2f}x" if same else "n/a"
        print(f"{label:<24} {cells}   {ratio}")
    lockstep_rows(preset(args.machine_preset), args.examples, args.steps)


if __name__ == "__main__":
    main()
