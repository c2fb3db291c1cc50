"""Long oracle runs: ``run_oracle("vma", examples, seed)``, behind ``vmconform oracle vma``.

Hypothesis draws the sequences (seeded, so a run is repeatable), each runs on the model and
on the host, and the first divergence is shrunk and reported with the seed, the calls, both
results and both windowed maps.  Shrinking is a pass of our own that deletes calls (blocks
first, then single calls) while the divergence persists: every attempt is a host run, and
Hypothesis' own shrinker, working on the draws behind a sequence whose calls aim at earlier
calls' addresses, spends minutes there without deleting much.  The report also says how many calls
were compared and how many each masking rule dropped, so a run that quietly masked
everything shows up as such.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import attrs
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from specs.machine import MachineConfig, preset
from specs.vma import AddressSpace
from stateful_tests.oracle.compare import Outcome, check_program, report
from stateful_tests.oracle.generate import Program, programs
from stateful_tests.oracle.host import HostProgram, run_on_host

SUBSYSTEMS = ("vma",)


class OracleMismatch(AssertionError):
    """The host and the model disagreed on ``program``."""

    def __init__(self, program: Program) -> None:
        super().__init__("host and model disagree")
        self.program = program


def minimise(program: Program, fails: Callable[[Program], bool]) -> Program:
    """Delete calls while ``fails`` stays true: blocks of halving size, down to one call,
    repeated until nothing more goes; then the files, if no call maps one."""
    calls = list(program.calls)
    size = max(len(calls) // 2, 1)
    while True:
        removed = False
        start = len(calls) - size
        while start >= 0 and calls:
            candidate = calls[:start] + calls[start + size:]
            if candidate and fails(attrs.evolve(program, calls=tuple(candidate))):
                calls, removed = candidate, True
            start -= size
        if size == 1 and not removed:
            break
        size = max(size // 2, 1)
    shrunk = attrs.evolve(program, calls=tuple(calls))
    uses_files = any(c[0] == "mmap" and 0 <= c[5] < len(program.files) for c in calls)
    if program.files and not uses_files and fails(attrs.evolve(shrunk, files=())):
        shrunk = attrs.evolve(shrunk, files=())
    return shrunk


@attrs.frozen
class OracleReport:
    """What a run did and found.  ``failure`` is the shrunk divergence's report, or None."""

    subsystem: str
    seed: int
    examples: int
    executions: int
    calls_compared: int
    masked: dict[str, int]
    seconds: float
    failure: str | None
    host_problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.host_problem is None

    def summary(self) -> str:
        """A few lines for the terminal."""
        masked = ", ".join(f"{k} {v}" for k, v in sorted(self.masked.items())) or "none"
        rate = self.calls_compared / self.seconds if self.seconds else 0.0
        head = (f"oracle {self.subsystem}: seed {self.seed}, {self.executions} sequences "
                f"({self.examples} asked), {self.calls_compared} calls compared "
                f"({rate:.0f}/s), masked: {masked}")
        if self.host_problem:
            return f"{head}\nhost unusable: {self.host_problem}"
        if self.failure:
            return f"{head}\nDIVERGENCE\n{self.failure}"
        return f"{head}\nno divergence"


def host_problem() -> str | None:
    """Why the running kernel cannot serve as an oracle here, or None when it can."""
    try:
        run = run_on_host(HostProgram(calls=()), timeout=30.0)
    except OSError as exc:  # fork or pipe refused
        return f"cannot fork a driver: {exc}"
    return None if run.status == "ok" else f"{run.status}: {run.message}"


def run_oracle(subsystem: str = "vma", examples: int = 1000, seed: int = 0, *,
               factory: Callable[[MachineConfig], AddressSpace] | None = None,
               machine: str = "small", max_calls: int = 30, timeout: float = 10.0,
               shrink: bool = True) -> OracleReport:
    """Run ``examples`` random sequences on the host and on ``factory`` (refmodel's address
    space by default) and report the first divergence, shrunk."""
    if subsystem not in SUBSYSTEMS:
        raise ValueError(f"no host oracle for {subsystem!r}; known: {', '.join(SUBSYSTEMS)}")
    if factory is None:
        from refmodel.vma import RefAddressSpace  # noqa: PLC0415 - only the default needs it
        factory = RefAddressSpace
    config = preset(machine)
    started = time.monotonic()
    problem = host_problem()
    if problem is not None:
        return OracleReport(subsystem, seed, examples, 0, 0, {}, 0.0, None, problem)
    masked: Counter[str] = Counter()
    counts = {"executions": 0, "calls": 0}

    def record(outcome: Outcome) -> None:
        counts["executions"] += 1
        counts["calls"] += len(outcome.model.kept)
        masked.update(reason for _, reason in outcome.model.dropped)

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @hypothesis_seed(seed)
    @given(programs(max_calls=max_calls))
    def one(program: Program) -> None:
        outcome = check_program(program, factory, config, timeout=timeout)
        record(outcome)
        if not outcome.ok:
            raise OracleMismatch(program)

    def fails(program: Program) -> bool:
        return not check_program(program, factory, config, timeout=timeout).ok

    failure: str | None = None
    try:
        one()
    except OracleMismatch as exc:
        found = minimise(exc.program, fails) if shrink else exc.program
        outcome = check_program(found, factory, config, timeout=timeout)
        note = (f"(shrunk from {len(exc.program.calls)} calls)" if shrink
                else "(not shrunk)")
        failure = report(outcome, seed) + f"\n{note}"
    return OracleReport(subsystem=subsystem, seed=seed, examples=examples,
                        executions=counts["executions"], calls_compared=counts["calls"],
                        masked=dict(masked), seconds=time.monotonic() - started,
                        failure=failure)
