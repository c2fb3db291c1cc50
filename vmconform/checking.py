"""Running the checks of one subsystem on one implementation, and the report that results.

A run drives the subsystem's state machine with every applicable check enabled.  When a check
fails, its shrunk trace becomes a reproducer and the run starts again with that check
disabled, so one broken property does not hide the others: the report has a verdict per check
ID, which is what ``vmconform check`` tabulates.
"""

from __future__ import annotations

import enum
import json
import time
from pathlib import Path
from typing import Any

import attrs
from hypothesis import Phase, Verbosity
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Flaky

from invariants.registry import LOCKSTEP, PLUGIN, CheckFailure, checks_for
from specs.machine import MachineConfig, preset
from stateful_tests import profiles
from stateful_tests.common import ConformanceMachine, MachineSpec
from stateful_tests.harness import Guard, Journal
from stateful_tests.profiles import run_machine
from stateful_tests.replay import minimise
from stateful_tests.suites import SUITES
from stateful_tests.trace import current_trace
from vmconform.registry import resolve

PASS, FAIL, SKIP, NOT_RUN = "pass", "fail", "skip", "not run"
MODES = ("lockstep", "contract")


@attrs.frozen
class Failure:
    """One failed check: the message and the steps that reproduce it."""

    check_id: str
    message: str
    steps: list[dict[str, Any]]
    reproducer: str | None = None


@attrs.frozen
class CheckResult:
    """The verdict on one check ID."""

    id: str
    title: str
    status: str
    reason: str = ""
    failure: Failure | None = None


@attrs.frozen
class RunReport:
    """Every verdict for one implementation, subsystem and mode."""

    impl: str
    subsystem: str
    mode: str
    preset: str
    seed: int
    examples: int
    results: list[CheckResult]
    elapsed: float

    @property
    def failed(self) -> list[CheckResult]:
        """The failing verdicts."""
        return [r for r in self.results if r.status == FAIL]

    def to_json(self) -> dict[str, Any]:
        """JSON-able form, for the worker process and ``--json``."""
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunReport:
        """Inverse of to_json."""
        results = [CheckResult(**{**r, "failure": Failure(**r["failure"]) if r["failure"]
                                  else None}) for r in data["results"]]
        return cls(**{**data, "results": results})


def check_titles(subsystem: str) -> dict[str, str]:
    """ID -> title for the subsystem's checks plus the two pseudo-checks."""
    titles = {c.id: c.title for c in checks_for(subsystem)}
    titles[LOCKSTEP] = "results and views equal refmodel's"
    titles[PLUGIN] = "the plug-in never raises, hangs or returns a wrong type"
    return titles


def machine_class(impl_name: str, subsystem: str, mode: str, config: MachineConfig,
                  enabled: frozenset[str], step_timeout: float | None = 10.0,
                  capabilities: frozenset[enum.Enum] | None = None,
                  ) -> type[ConformanceMachine]:
    """The state machine for one implementation (raises LookupError for unknown names)."""
    suite = SUITES.get(subsystem)
    if suite is None:
        raise LookupError(f"no subsystem {subsystem!r}; have {', '.join(SUITES)}")
    implementation = resolve(impl_name)
    if subsystem not in implementation.factories:
        raise LookupError(f"{impl_name} implements {', '.join(implementation.factories)}, "
                          f"not {subsystem}")
    return suite.make_machine(MachineSpec(
        factory=implementation.factories[subsystem], impl_name=impl_name, mode=mode,
        config=config, enabled=enabled, step_timeout=step_timeout, capabilities=capabilities,
        factories=dict(implementation.factories)))


def _capabilities(impl_name: str, subsystem: str, config: MachineConfig,
                  step_timeout: float | None) -> Any:
    """Boot once, guarded, to learn the capabilities (a factory that fails is reported)."""
    implementation = resolve(impl_name)
    if subsystem not in implementation.factories:
        raise LookupError(f"{impl_name} implements {', '.join(implementation.factories)}, "
                          f"not {subsystem}")
    factory = implementation.factories[subsystem]
    spec = MachineSpec(factory=factory, impl_name=impl_name, mode="contract", config=config,
                       enabled=frozenset(), factories=dict(implementation.factories))
    deps = SUITES[subsystem].extra_args(spec)
    guard = Guard.create(lambda c: factory(c, *deps), config, impl_name, step_timeout,
                         Journal(None))
    return getattr(guard.impl, "capabilities", None)


def run_check(impl_name: str, subsystem: str = "buddy", mode: str = "lockstep",
              preset_name: str = "tiny", seed: int = 0, examples: int | None = None,
              profile: str = "ci", reproducer_dir: Path | None = None,
              step_timeout: float | None = 10.0, shrink_more: bool = True,
              shrink: bool = True, keep_going: bool = True,
              only: frozenset[str] | None = None) -> RunReport:
    """Check one implementation of one subsystem; never raises for a misbehaving plug-in.

    ``shrink=False`` skips Hypothesis' shrinking and ``keep_going=False`` stops at the first
    failed check instead of rerunning without it: the mutant tests only need to know that the
    right check fires, and shrinking is most of the cost of a failing run.
    """
    started = time.monotonic()
    config = preset(preset_name)
    titles = check_titles(subsystem)
    base = profiles.profile(profile)
    # The explain phase annotates Hypothesis' own report, which run_check never shows; it
    # would triple the cost of every failing run.
    settings = profiles.profile(profile, verbosity=Verbosity.quiet,
                                phases=[p for p in base.phases if p is not Phase.explain
                                        and (shrink or p is not Phase.shrink)],
                                **({"max_examples": examples} if examples else {}))
    results: dict[str, CheckResult] = {}

    def finish() -> RunReport:
        ordered = [results.get(cid, CheckResult(cid, title, NOT_RUN, "run stopped early"))
                   for cid, title in titles.items()]
        return RunReport(impl=impl_name, subsystem=subsystem, mode=mode, preset=config.name,
                         seed=seed, examples=settings.max_examples, results=ordered,
                         elapsed=time.monotonic() - started)

    try:
        capability_type = SUITES[subsystem].capability_type() if subsystem in SUITES else None
        caps = _capabilities(impl_name, subsystem, config, step_timeout)
    except CheckFailure as failure:
        results[PLUGIN] = CheckResult(PLUGIN, titles[PLUGIN], FAIL,
                                      failure=Failure(PLUGIN, failure.message, []))
        return finish()
    except (LookupError, ImportError) as exc:
        results[PLUGIN] = CheckResult(PLUGIN, titles[PLUGIN], FAIL,
                                      failure=Failure(PLUGIN, str(exc), []))
        return finish()

    enabled = {PLUGIN} | ({LOCKSTEP} if mode == "lockstep" else set())
    for check in checks_for(subsystem):
        if only is not None and check.id not in only:
            results[check.id] = CheckResult(check.id, check.title, SKIP, "not selected")
        elif not isinstance(caps, frozenset) or not check.applies_to(caps):
            have = caps if isinstance(caps, frozenset) else frozenset()
            missing = ", ".join(sorted(c.value for c in check.needs - have))
            results[check.id] = CheckResult(check.id, check.title, SKIP,
                                            f"implementation lacks: {missing}")
        else:
            enabled.add(check.id)
    if mode != "lockstep":
        results[LOCKSTEP] = CheckResult(LOCKSTEP, titles[LOCKSTEP], SKIP, "contract mode")

    while True:
        known = caps if capability_type is not None and isinstance(caps, frozenset) and all(
            isinstance(c, capability_type) for c in caps) else None
        machine = machine_class(impl_name, subsystem, mode, config, frozenset(enabled),
                                step_timeout, known)
        hypothesis_seed(seed)(machine)
        try:
            run_machine(machine, settings)
        except CheckFailure as failure:
            failed_id = failure.check_id if failure.check_id in enabled else PLUGIN
            trace = current_trace()
            steps = trace.steps if trace is not None else []
            if shrink_more and failed_id != PLUGIN:
                steps = minimise(machine, steps, failed_id)
            found = Failure(failed_id, failure.message, steps)
            if reproducer_dir is not None:
                found = attrs.evolve(found, reproducer=str(write_reproducer(
                    reproducer_dir, impl_name, subsystem, mode, config.name, seed, found,
                    frozenset(enabled))))
            results[failed_id] = CheckResult(failed_id, titles[failed_id], FAIL, failure=found)
            enabled.discard(failed_id)
            if failed_id == PLUGIN or not keep_going:
                break  # the plug-in cannot be driven further: the rest stays "not run"
            continue
        except Exception as exc:
            kind = "the same steps gave different outcomes (non-deterministic plug-in?)" if \
                isinstance(exc, Flaky) else f"unexpected {type(exc).__name__}"
            trace = current_trace()
            results[PLUGIN] = CheckResult(PLUGIN, titles[PLUGIN], FAIL, failure=Failure(
                PLUGIN, f"{kind}: {exc}", trace.steps if trace is not None else []))
            break
        for cid in enabled:
            results.setdefault(cid, CheckResult(cid, titles[cid], PASS))
        break
    return finish()


def write_reproducer(directory: Path, impl: str, subsystem: str, mode: str, preset_name: str,
                     seed: int, failure: Failure, enabled: frozenset[str]) -> Path:
    """A runnable ``.py`` reproducer (it embeds the JSON that ``vmconform replay`` reads)."""
    directory.mkdir(parents=True, exist_ok=True)
    safe_impl = "".join(ch if ch.isalnum() else "_" for ch in impl)
    path = directory / f"{subsystem}-{safe_impl}-{mode}-{failure.check_id}-seed{seed}.py"
    data = {"impl": impl, "subsystem": subsystem, "mode": mode, "preset": preset_name,
            "seed": seed, "check_id": failure.check_id, "enabled": sorted(enabled),
            "steps": failure.steps}
    first_line = failure.message.splitlines()[0] if failure.message else ""
    path.write_text(
        f'"""vmconform reproducer: {failure.check_id} failed on {impl} ({mode} mode, preset '
        f'{preset_name}, seed {seed}).\n\n{first_line}\n\nRun: python {path.name}   or   '
        f'vmconform replay {path.name}\n"""\n\n'
        f"import json\nimport sys\n\nfrom vmconform.replay import replay_data\n\n"
        f"DATA = json.loads(r\"\"\"\n{json.dumps(data, indent=1)}\n\"\"\")\n\n"
        f'if __name__ == "__main__":\n    sys.exit(replay_data(DATA))\n', encoding="utf-8")
    return path

