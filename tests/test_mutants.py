"""The suite catches every mutant under the check it targets, and the reference model passes.

Each mutant in ``tests/mutants/`` is run in contract mode with only its target check enabled
(plus the PLUGIN pseudo-check, which ``run_check`` always keeps): that check must report the
failure, with the steps that reproduce it.  The runs skip shrinking and stop at the first
failure: which check fires is the question here, and shrinking is most of a failing run's
cost (``tests/vmconform`` covers shrinking and reproducers).
"""

from __future__ import annotations

from typing import Any

import pytest

from invariants.registry import LOCKSTEP, PLUGIN
from specs.buddy import PageAllocator
from specs.machine import preset
from tests.mutants import buddy as buddy_mutants
from tests.mutants import impl_name, mutants
from vmconform import registry
from vmconform.checking import FAIL, PASS, SKIP, RunReport, run_check

#: Examples per mutant run.  Every mutant is built to show its bug in most examples, not just
#: under a lucky seed: Hypothesis also draws on literals from every local module imported, so
#: which examples a seed explores changes with unrelated code (and with the process: pytest
#: and the CLI import different modules).  Measured: each mutant is caught under 30 of 30
#: seeds at this budget.
EXAMPLES = 60
#: A mutant whose bug needs a longer search names its own budget as ``examples``.

MUTANTS = mutants()
SUBSYSTEMS = list(registry.SUBSYSTEMS)


def subsystem_of(mutant: Any) -> str:
    """``BUDDY-I3`` -> ``buddy``: a check ID's prefix names its subsystem."""
    return str(mutant.target).split("-", 1)[0].lower()


def verdicts(report: RunReport) -> dict[str, str]:
    """check ID -> status."""
    return {result.id: result.status for result in report.results}


def plugin_trouble(report: RunReport) -> str:
    """The PLUGIN failure message, if any, for assertion messages."""
    for result in report.results:
        if result.id == PLUGIN and result.failure is not None:
            return result.failure.message
    return ""


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda cls: f"{cls.target}-{cls.__name__}")
def test_mutant_is_caught_by_its_target(mutant: Any) -> None:
    """Contract mode with only the target check enabled reports that check failed, with steps."""
    report = run_check(impl_name(mutant), subsystem=subsystem_of(mutant), mode="contract",
                       only=frozenset({mutant.target}), shrink_more=False, shrink=False,
                       keep_going=False, examples=getattr(mutant, "examples", EXAMPLES))
    result = next(r for r in report.results if r.id == mutant.target)
    assert FAIL == result.status, f"{result.reason} {plugin_trouble(report)}"
    assert result.failure is not None
    assert mutant.target == result.failure.check_id
    assert [] != result.failure.steps


def test_mutant_diverges_from_refmodel_in_lockstep_mode() -> None:
    """Lockstep mode with no spec check enabled still catches a mutant, as LOCKSTEP."""
    report = run_check(impl_name(buddy_mutants.BulkRefillKeepsNrFreePages), mode="lockstep",
                       only=frozenset(), shrink_more=False, examples=EXAMPLES)
    assert FAIL == verdicts(report)[LOCKSTEP], plugin_trouble(report)
    failure = next(r.failure for r in report.results if r.id == LOCKSTEP)
    assert failure is not None
    assert [] != failure.steps


@pytest.mark.parametrize("mode", ["contract", "lockstep"])
@pytest.mark.parametrize("subsystem", SUBSYSTEMS)
def test_refmodel_passes_every_check(subsystem: str, mode: str) -> None:
    """The reference model fails nothing: every check passes (LOCKSTEP is skipped in contract)."""
    report = run_check("refmodel", subsystem=subsystem, mode=mode, examples=30)
    expected = {cid: SKIP if cid == LOCKSTEP and mode == "contract" else PASS
                for cid in verdicts(report)}
    assert expected == verdicts(report), plugin_trouble(report)


def test_every_mutant_names_a_target_and_a_bug() -> None:
    """Each mutant has a docstring and targets a check of a subsystem the suite runs; a
    mutant of a subsystem other than buddy says so in its ``subsystem`` attribute, which is
    how ``vmconform`` knows what a bare class implements."""
    problems = [cls.__name__ for cls in MUTANTS
                if not (cls.__doc__ or "").strip() or subsystem_of(cls) not in SUBSYSTEMS
                or getattr(cls, "subsystem", "buddy") != subsystem_of(cls)]
    assert [] == problems


def test_fastmodel_is_registered() -> None:
    """The built-in name ``fastmodel`` resolves to a factory that boots a PageAllocator."""
    pytest.importorskip("fastmodel.buddy")
    assert "fastmodel" in registry.all_names()
    allocator = registry.resolve("fastmodel").factories["buddy"](preset("tiny"))
    assert "FastBuddy" == type(allocator).__name__
    assert isinstance(allocator, PageAllocator)
