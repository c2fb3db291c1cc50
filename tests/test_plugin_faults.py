"""Plug-ins that raise, hang, crash, fail to boot, lack a method or return the wrong type are
reported as a PLUGIN failure naming the step, and the runner itself never raises.

The misbehaving plug-ins live in ``tests/mutants/plugins.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from invariants.registry import PLUGIN
from vmconform.checking import FAIL, NOT_RUN, RunReport, run_check
from vmconform.worker import run_isolated

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGINS = "tests.mutants.plugins"

#: (plug-in, pieces the PLUGIN message must contain); the hang has its own test.
FAULTS = [
    ("RaisesInAlloc",
     ["RaisesInAlloc.alloc_pages(gfp_mask=", "raised RuntimeError: allocator exploded"]),
    ("AllocReturnsHexString",
     ["AllocReturnsHexString.alloc_pages(gfp_mask=", "returned '0x10'",
      "requires an int pfn or None, not str"]),
    ("AllocReturnsTrue",
     ["AllocReturnsTrue.alloc_pages(gfp_mask=", "returned True",
      "requires an int pfn or None, not bool"]),
    ("FreeReturnsFloat",
     ["FreeReturnsFloat.free_pages(pfn=", "returned 1.5", "requires an int, not float"]),
    ("factory_raises",
     ["factory_raises factory(tiny)", "raised OSError: cannot map the allocator's shared "
                                      "library for tiny"]),
    ("LacksDrainPages", ["LacksDrainPages has no method 'drain_pages'"]),
    ("LacksCapabilities",
     ["LacksCapabilities.capabilities must be a frozenset of specs.buddy.Capability, "
      "not None"]),
    ("CapabilitiesAsStrings",
     ["CapabilitiesAsStrings.capabilities must be a frozenset of specs.buddy.Capability"]),
    ("CapabilitiesNotIterable",
     ["CapabilitiesNotIterable.capabilities must be a frozenset of specs.buddy.Capability, "
      "not 5"]),
]


def plugin_failure(report: RunReport) -> str:
    """The PLUGIN verdict's message ("" when PLUGIN did not fail)."""
    result = next(r for r in report.results if r.id == PLUGIN)
    return result.failure.message if result.status == FAIL and result.failure else ""


@pytest.mark.parametrize(("name", "expected_parts"), FAULTS, ids=[fault[0] for fault in FAULTS])
def test_invalid_plugin_is_reported_as_plugin_failure(name: str,
                                                      expected_parts: list[str]) -> None:
    """run_check returns a report whose PLUGIN verdict failed with a message naming the step."""
    report = run_check(f"{PLUGINS}:{name}", mode="contract", examples=10)
    message = plugin_failure(report)
    assert [] == [part for part in expected_parts if part not in message], message
    assert [] == [r.id for r in report.results if r.id != PLUGIN and r.status == FAIL]


def test_invalid_hang_is_cut_off_by_the_step_timeout() -> None:
    """A free_pages that sleeps 60 s is a PLUGIN failure after the 0.5 s step timeout."""
    started = time.monotonic()
    report = run_check(f"{PLUGINS}:HangsInFreePages", mode="contract", examples=10,
                       step_timeout=0.5)
    elapsed = time.monotonic() - started
    message = plugin_failure(report)
    expected_parts = ["HangsInFreePages.free_pages(pfn=", "did not return within 0.5 s"]
    assert [] == [part for part in expected_parts if part not in message], message
    assert elapsed < 45, f"the run took {elapsed:.1f} s"


def test_invalid_plugin_stops_the_run() -> None:
    """After a PLUGIN failure nothing else is judged: the checks it enabled stay 'not run'."""
    report = run_check(f"{PLUGINS}:RaisesInAlloc", mode="contract", examples=10,
                       only=frozenset({"BUDDY-I1"}))
    verdicts = {r.id: r.status for r in report.results}
    assert (FAIL, NOT_RUN) == (verdicts[PLUGIN], verdicts["BUDDY-I1"])


def test_invalid_plugin_failure_records_the_failing_step() -> None:
    """The failure's steps end with the rule whose call raised."""
    report = run_check(f"{PLUGINS}:FreeReturnsFloat", mode="contract", examples=10)
    failure = next(r.failure for r in report.results if r.id == PLUGIN)
    assert failure is not None
    assert failure.steps
    assert failure.steps[-1]["rule"] in {"free", "free_again", "free_wrong_order", "bad_call",
                                         "free_everything", "pcp_churn"}


def test_invalid_unknown_module_is_reported_as_plugin_failure() -> None:
    """A name that cannot be imported is a PLUGIN failure, not an exception."""
    name = f"{PLUGINS}_no_such_module:Buddy"
    report = run_check(name, mode="contract", examples=10)
    expected = f"cannot load {name}: No module named '{PLUGINS}_no_such_module'"
    assert expected == plugin_failure(report)


def test_invalid_crash_in_native_code_is_reported_by_the_isolated_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A plug-in that aborts the process is reported as PLUGIN with the last journalled call."""
    monkeypatch.chdir(REPO_ROOT)  # the worker puts the working directory on its path
    report = run_isolated(timeout=120, impl_name=f"{PLUGINS}:AbortsInAlloc", mode="contract",
                          examples=5)
    message = plugin_failure(report)
    expected_parts = ["the worker process died (killed by signal SIGABRT)",
                      'last call journalled before it died: {"call": "alloc_pages"']
    assert [] == [part for part in expected_parts if part not in message], message
