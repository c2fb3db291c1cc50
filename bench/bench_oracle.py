"""Oracle comparisons per second for the address space (issue 4, item 8), in one run.

The same fixed set of generated programs is drawn (timed: Hypothesis' share of a
``vmconform oracle vma`` run) and then run four ways, side by side in one process: the
model alone (refmodel, then fastmodel when it imports), the host alone (the driver child, with
the calls the model kept), and the whole comparison (model, host, projection and compare).
The figures that matter are calls compared per second and the share of the comparison's time
spent on the host; the ratios hold across machines better than the absolute rates.

    python bench/bench_oracle.py [--programs 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from rich.console import Console
from rich.table import Table

from refmodel.vma import RefAddressSpace
from specs.machine import preset
from stateful_tests.oracle.compare import check_program, run_model
from stateful_tests.oracle.generate import Program, programs
from stateful_tests.oracle.host import HostProgram, run_on_host


def draw_programs(count: int, seed: int) -> list[Program]:
    """``count`` programs exactly as ``run_oracle`` would draw them with this seed."""
    found: list[Program] = []

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @hypothesis_seed(seed)
    @given(programs())
    def collect(program: Program) -> None:
        found.append(program)

    collect()
    return found


def timed(label: str, work: Any) -> tuple[str, float, Any]:
    start = time.perf_counter()
    result = work()
    return label, time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = preset("small")
    started = time.perf_counter()
    progs = draw_programs(args.programs, args.seed)
    generation = time.perf_counter() - started
    factories: list[tuple[str, Any]] = [("refmodel", RefAddressSpace)]
    try:
        from fastmodel.vma import FastAddressSpace  # noqa: PLC0415 - optional
        factories.append(("fastmodel", FastAddressSpace))
    except ImportError:
        pass
    run_on_host(HostProgram(calls=()))  # start the driver outside the timings
    rows = []
    kept = [run_model(p, RefAddressSpace, config) for p in progs]
    calls = sum(len(m.kept) for m in kept)
    for name, factory in factories:
        rows.append(timed(f"model alone ({name})",
                          lambda f=factory: [run_model(p, f, config) for p in progs]))
    rows.append(timed("host alone (driver child)", lambda: [
        run_on_host(HostProgram(calls=m.kept, files=p.files)) for p, m in zip(progs, kept,
                                                                               strict=True)]))
    for name, factory in factories:
        rows.append(timed(f"whole comparison ({name})", lambda f=factory: [
            check_program(p, f, config) for p in progs]))
    rows.insert(0, ("Hypothesis drawing the programs", generation, None))
    verdicts = [o.ok for o in rows[-1][2]]
    whole = rows[len(factories) + 2][1]
    table = Table(title=f"{len(progs)} programs, {calls} calls compared (seed {args.seed})")
    for column in ("run", "seconds", "programs/s", "calls/s", "share of the comparison"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for label, seconds, _ in rows:
        table.add_row(label, f"{seconds:.2f}", f"{len(progs) / seconds:,.0f}",
                      f"{calls / seconds:,.0f}", f"{seconds / whole:.0%}")
    Console().print(table)
    print(f"all {len(verdicts)} comparisons agreed: {all(verdicts)}")


if __name__ == "__main__":
    main()
