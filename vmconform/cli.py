"""The ``vmconform`` command: check, fuzz, oracle, replay, list.

``vmconform check`` with no arguments checks the bundled fastmodel on every subsystem that has
a state machine and prints one verdict per check ID; it exits 1 when anything fails.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from invariants.registry import checks_for
from specs.machine import PRESETS, derive_zones
from stateful_tests.suites import SUITES
from vmconform import registry
from vmconform.checking import FAIL, MODES, PASS, SKIP, RunReport
from vmconform.report import render_failures, render_table
from vmconform.worker import run_isolated

console = Console(highlight=False, emoji=False)
DEFAULT_REPRODUCERS = Path(".vmconform/failures")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vmconform")
def main() -> None:
    """Conformance suite and reference model for the Linux 4.6 VM subsystem."""


def _modes_for(impl: str, subsystem: str, mode: str) -> list[str]:
    """'auto': lockstep for implementations that claim 4.6's exact choices (the capability
    the subsystem's Suite names as exact), else contract."""
    if mode != "auto":
        return list(MODES) if mode == "both" else [mode]
    try:
        factory = registry.resolve(impl).factories[subsystem]
        caps = getattr(factory, "capabilities", None)
        suite = SUITES[subsystem]
        exact = getattr(suite.capability_type(), suite.exact_capability, None)
        if caps is None and impl in registry.BUILTINS:
            return ["lockstep"]
        if caps is not None and exact is not None and exact not in caps:
            return ["contract"]
    except (LookupError, ImportError):
        pass  # the worker reports the lookup failure as a PLUGIN failure
    return ["lockstep"]


def _implements(impl: str, subsystem: str) -> bool:
    """False only when the implementation is known and lacks the subsystem (an unknown name
    is left for the worker to report)."""
    try:
        return subsystem in registry.resolve(impl).factories
    except (LookupError, ImportError):
        return True


@main.command()
@click.argument("subsystems", nargs=-1)
@click.option("--impl", "impls", multiple=True, default=["fastmodel"], show_default=True,
              help="Implementation: refmodel, fastmodel, an entry-point name or module:factory. "
                   "Repeat to compare several.")
@click.option("--mode", type=click.Choice(["auto", *MODES, "both"]), default="auto",
              show_default=True, help="lockstep compares with refmodel step by step; contract "
                                      "judges by invariants and rules alone.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--examples", type=int, default=None, help="Hypothesis examples per run.")
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="tiny",
              show_default=True)
@click.option("--profile", type=click.Choice(["ci", "dev", "fuzz"]), default="ci",
              show_default=True)
@click.option("--reproducers", type=click.Path(path_type=Path), default=DEFAULT_REPRODUCERS,
              show_default=True, help="Where failing runs write their reproducers.")
@click.option("--timeout", type=float, default=1800.0, show_default=True,
              help="Seconds one subsystem check may take before it is reported as hung.")
@click.option("--step-timeout", type=float, default=10.0, show_default=True,
              help="Seconds one plug-in call may take.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the reports as JSON.")
def check(subsystems: tuple[str, ...], impls: tuple[str, ...], mode: str, seed: int,
          examples: int | None, preset_name: str, profile: str, reproducers: Path,
          timeout: float, step_timeout: float, json_out: Path | None) -> None:
    """Check implementations and print a verdict per check ID.

    With no SUBSYSTEMS, every subsystem each implementation provides is checked."""
    chosen = list(subsystems) or list(registry.SUBSYSTEMS)
    unknown = [s for s in chosen if s not in registry.SUBSYSTEMS]
    if unknown:
        raise click.BadParameter(f"unknown subsystem(s) {unknown}; have {registry.SUBSYSTEMS}")
    reports: list[RunReport] = []
    for subsystem in chosen:
        for impl in impls:
            if not subsystems and not _implements(impl, subsystem):
                console.print(escape(f"{impl} does not implement {subsystem}: not checked"))
                continue
            for run_mode in _modes_for(impl, subsystem, mode):
                with console.status(escape(f"checking {subsystem} on {impl} ({run_mode}, "
                                           f"preset {preset_name}, seed {seed})")):
                    reports.append(run_isolated(
                        timeout=timeout, impl_name=impl, subsystem=subsystem, mode=run_mode,
                        preset_name=preset_name, seed=seed, examples=examples, profile=profile,
                        reproducer_dir=reproducers, step_timeout=step_timeout))
    for subsystem in chosen:
        these = [r for r in reports if r.subsystem == subsystem]
        console.print(render_table(subsystem, these))
        render_failures(console, these)
    if json_out is not None:
        json_out.write_text(json.dumps([r.to_json() for r in reports], indent=1), "utf-8")
    failed = sum(len(r.failed) for r in reports)
    checked = sum(1 for r in reports for res in r.results if res.status in (PASS, FAIL))
    console.print(f"{checked - failed} passed, {failed} failed")
    raise SystemExit(1 if failed else 0)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh]?)$")


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '2h' -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 10m or 2h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


@main.command()
@click.argument("subsystem", default="buddy", type=click.Choice(registry.SUBSYSTEMS))
@click.option("--impl", default="fastmodel", show_default=True)
@click.option("--mode", type=click.Choice(["auto", *MODES]), default="auto", show_default=True)
@click.option("--time", "budget", default="10m", show_default=True,
              help="How long to fuzz: 30s, 10m, 2h.")
@click.option("--seed", type=int, default=None, help="First seed (default: time-based).")
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="tiny",
              show_default=True)
@click.option("--chunk", type=int, default=200, show_default=True,
              help="Examples per run between progress updates.")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_REPRODUCERS,
              show_default=True, help="Where reproducers are written.")
def fuzz(subsystem: str, impl: str, mode: str, budget: str, seed: int | None,
         preset_name: str, chunk: int, out: Path) -> None:
    """Run the machine with fresh seeds until the time budget is spent.

    Every failure is shrunk, written as a reproducer and kept in the example database
    (.vmconform/examples); the check that failed is then set aside and fuzzing continues on
    the others.
    """
    seconds = parse_duration(budget)
    run_mode = _modes_for(impl, subsystem, mode)[0]
    next_seed = int(time.time()) if seed is None else seed
    failed: dict[str, RunReport] = {}
    ids = {c.id for c in checks_for(subsystem)}
    started = time.monotonic()
    runs = examples = 0
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[status]}"), console=console) as progress:
        task = progress.add_task(f"fuzzing {subsystem} on {impl} ({run_mode})", total=seconds,
                                 status="")
        while time.monotonic() - started < seconds:
            remaining = ids - set(failed)
            if not remaining:
                break
            report = run_isolated(
                timeout=max(seconds - (time.monotonic() - started), 60.0), impl_name=impl,
                subsystem=subsystem, mode=run_mode, preset_name=preset_name, seed=next_seed,
                examples=chunk, profile="fuzz", reproducer_dir=out,
                only=frozenset(remaining))
            runs += 1
            examples += chunk
            for result in report.failed:
                failed.setdefault(result.id, report)
            progress.update(task, completed=min(time.monotonic() - started, seconds),
                            status=f"seed {next_seed}  runs {runs}  examples {examples}  "
                                   f"failures {len(failed)}")
            if any(r.id == "PLUGIN" for r in report.failed):
                break
            next_seed += 1
    reports = list({id(r): r for r in failed.values()}.values())
    if reports:
        render_failures(console, reports)
    console.print(f"fuzzed {examples} examples in {runs} runs over "
                  f"{time.monotonic() - started:.0f} s: {len(failed)} check(s) failed")
    raise SystemExit(1 if failed else 0)


@main.command()
@click.argument("subsystem", type=click.Choice(["vma"]))
@click.option("--impl", default="refmodel", show_default=True,
              help="Implementation compared with the running kernel.")
@click.option("--examples", type=int, default=5000, show_default=True,
              help="Random system-call sequences to run on both.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="small",
              show_default=True)
@click.option("--max-calls", type=int, default=30, show_default=True,
              help="Calls per sequence at most.")
@click.option("--no-shrink", is_flag=True, help="Report the first divergence as found.")
def oracle(subsystem: str, impl: str, examples: int, seed: int, preset_name: str,
           max_calls: int, no_shrink: bool) -> None:
    """Run the same random system calls on the host kernel and on IMPL, and compare.

    The host is a real Linux 6.x; what changed since 4.6 is masked by the table in
    specs/vma_oracle.md, and generation keeps to behaviour both kernels share.
    """
    from stateful_tests.oracle.runner import run_oracle  # noqa: PLC0415  (keeps --help fast)

    try:
        factory = registry.resolve(impl).factories.get(subsystem)
    except (LookupError, ImportError) as exc:
        raise click.ClickException(str(exc)) from exc
    if factory is None:
        raise click.ClickException(f"{impl} does not implement {subsystem}")
    with console.status(escape(f"oracle {subsystem} on {impl}: {examples} sequences, "
                               f"seed {seed}")):
        result = run_oracle(subsystem, examples, seed, factory=factory, machine=preset_name,
                            max_calls=max_calls, shrink=not no_shrink)
    console.print(escape(result.summary()))
    raise SystemExit(0 if result.ok else 1)


@main.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
def replay(file: Path) -> None:
    """Re-run a reproducer written by check or fuzz."""
    from vmconform.replay import replay_file  # noqa: PLC0415  (keeps `--help` fast)

    raise SystemExit(replay_file(file))


@main.command(name="list")
@click.argument("what", type=click.Choice(["all", "impls", "subsystems", "invariants",
                                           "presets"]), default="all")
def list_(what: str) -> None:
    """Show implementations, subsystems, check IDs and machine presets."""
    if what in ("all", "impls"):
        table = Table(title="implementations")
        table.add_column("name")
        table.add_column("source")
        table.add_column("subsystems")
        for name, impl in registry.BUILTINS.items():
            table.add_row(name, "built-in: " + impl.description, ", ".join(impl.factories))
        for name, target in registry.registered().items():
            table.add_row(name, f"entry point: {target}", "")
        table.add_row("module:factory", "any importable factory",
                      "its `subsystem` attribute (default buddy)")
        console.print(table)
    if what in ("all", "subsystems"):
        table = Table(title="subsystems")
        table.add_column("subsystem")
        table.add_column("checks")
        table.add_column("spec")
        table.add_column("what")
        for subsystem in registry.SUBSYSTEMS:
            table.add_row(subsystem, str(len(checks_for(subsystem))), f"specs/{subsystem}.md",
                          SUITES[subsystem].description)
        console.print(table)
    if what in ("all", "invariants"):
        table = Table(title="checks")
        for column in ("id", "title", "kind", "needs"):
            table.add_column(column)
        for subsystem in registry.SUBSYSTEMS:
            for check_ in checks_for(subsystem):
                table.add_row(check_.id, check_.title, check_.kind.value,
                              ", ".join(sorted(c.value for c in check_.needs)))
        console.print(table)
    if what in ("all", "presets"):
        table = Table(title="machine presets")
        for column in ("preset", "pages", "cpus", "zones", "customised"):
            table.add_column(column)
        for name, config in PRESETS.items():
            zones = ", ".join(f"{z.name} {z.managed_pages}" for z in derive_zones(config)
                              if z.populated)
            table.add_row(name, str(config.nr_pages), str(config.nr_cpus), zones,
                          ", ".join(config.customised) or "-")
        console.print(table)


__all__ = ["FAIL", "PASS", "SKIP", "main"]
