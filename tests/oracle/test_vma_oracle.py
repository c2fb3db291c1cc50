"""The running kernel as an oracle for the address space (issue 4, item 5).

Short budget here (derandomized); long runs are ``vmconform oracle vma``.  Besides the
differential run itself, these tests pin down that the executor reports what the kernel
did, that every masking rule hides a difference the host really shows, and that the
comparison catches a model that is wrong.
"""

from __future__ import annotations

from typing import Any

import pytest

from refmodel.vma import RefAddressSpace
from specs.machine import preset
from stateful_tests.oracle.compare import check_program, report, run_model
from stateful_tests.oracle.generate import Program, page_addr
from stateful_tests.oracle.host import HostFile, HostProgram, run_on_host
from stateful_tests.oracle.runner import host_problem, run_oracle

pytestmark = pytest.mark.oracle

_PROBLEM = host_problem()
if _PROBLEM is not None:  # pragma: no cover - only on a host that forbids fork or mmap
    pytest.skip(f"the host kernel cannot serve as an oracle: {_PROBLEM}",
                allow_module_level=True)

P = 4096
RW, R = 3, 1
ANON_FIXED = 0x32  # MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
NORESERVE = 0x4000
CONFIG = preset("small")


def at(page: int) -> int:
    return page_addr(page)


def spans(maps: Any) -> list[tuple[int, int, str]]:
    return [((m.start - at(0)) // P, (m.end - at(0)) // P, m.perms) for m in maps]


# -- the executor ---------------------------------------------------------------------------------


def test_host_reports_results_and_merged_maps() -> None:
    run = run_on_host(HostProgram(calls=(
        ("mmap", at(0), 4 * P, RW, ANON_FIXED, -1, 0),
        ("mmap", at(4), 4 * P, RW, ANON_FIXED, -1, 0),
        ("mprotect", at(2), P, R),
        ("munmap", at(0), 0),
        ("touch", at(40), True),
        ("mmap", at(20), 2 * P, RW, 0x11, 0, P),
    ), files=(HostFile(4 * P, 2),)))
    assert run.status == "ok"
    assert run.initial == ()
    assert run.results == (at(0), at(4), 0, -22, -14, at(20))
    assert spans(run.maps[1]) == [(0, 8, "rw-p")]
    assert spans(run.maps[2]) == [(0, 2, "rw-p"), (2, 3, "r--p"), (3, 8, "rw-p")]
    last = run.maps[-1][-1]
    assert (last.file, last.offset, last.perms) == (0, P, "rw-s")


def test_window_is_empty_again_for_the_next_program() -> None:
    run_on_host(HostProgram(calls=(("mmap", at(0), P, RW, ANON_FIXED, -1, 0),)))
    again = run_on_host(HostProgram(calls=(("mprotect", at(0), P, R),)))
    assert again.results == (-12,)  # ENOMEM: nothing is mapped there any more


def test_overrun_is_reported_and_the_next_program_still_runs() -> None:
    slow = run_on_host(HostProgram(calls=(("munmap", at(0), P),) * 50), timeout=0.0)
    assert slow.status == "timeout"
    assert "after" in slow.message
    fine = run_on_host(HostProgram(calls=(("munmap", at(0), P),)))
    assert (fine.status, fine.results) == ("ok", (0,))


# -- the differential run -------------------------------------------------------------------------


def test_refmodel_agrees_with_the_running_kernel() -> None:
    result = run_oracle("vma", examples=150, seed=0)
    assert result.ok, result.summary()
    assert result.calls_compared > 1000


def test_fastmodel_agrees_with_the_running_kernel() -> None:
    fast = pytest.importorskip("fastmodel.vma")
    result = run_oracle("vma", examples=60, seed=4, factory=fast.FastAddressSpace)
    assert result.ok, result.summary()


def test_run_oracle_reports_counts() -> None:
    result = run_oracle("vma", examples=20, seed=3)
    assert result.ok, result.summary()
    assert result.executions == 20
    assert result.calls_compared > 20
    assert "no divergence" in result.summary()


def test_run_oracle_knows_only_vma() -> None:
    with pytest.raises(ValueError, match="no host oracle"):
        run_oracle("slub", examples=1)


# -- every masking rule hides a real difference ---------------------------------------------------

MASKED: list[tuple[str, tuple[tuple[Any, ...], ...]]] = [
    ("mremap-shrink-unmapped", (
        ("mremap", at(10), 2 * P, P, 0, 0),)),
    ("mremap-fixed-efault", (  # a move of two VMAs: 4.6 refuses, the host moves both
        ("mmap", at(0), 2 * P, RW, ANON_FIXED, -1, 0),
        ("mmap", at(2), 2 * P, R, ANON_FIXED, -1, 0),
        ("mremap", at(0), 4 * P, 4 * P, 3, at(40)))),
    ("mremap-grow-merge", (
        ("mmap", at(0), 2 * P, RW, ANON_FIXED, -1, 0),
        ("mmap", at(4), 2 * P, RW, ANON_FIXED, -1, 0),
        ("mremap", at(0), 2 * P, 4 * P, 0, 0))),
    ("merge-account", (  # mprotect RW->R: the host drops VM_ACCOUNT and merges
        ("mmap", at(0), 4 * P, R, ANON_FIXED, -1, 0),
        ("mmap", at(4), 4 * P, RW, ANON_FIXED, -1, 0),
        ("mprotect", at(4), 4 * P, R))),
    ("merge-anon-vma", (  # a faulted VMA made compatible with an unfaulted neighbour
        ("mmap", at(0), 4 * P, R, ANON_FIXED | NORESERVE, -1, 0),
        ("mmap", at(4), 4 * P, RW, ANON_FIXED | NORESERVE, -1, 0),
        ("touch", at(4), True),
        ("mprotect", at(4), 4 * P, R))),
    ("touch-gup-read", (
        ("mmap", at(0), P, 2, ANON_FIXED, -1, 0),
        ("touch", at(0), False))),
    ("touch-stack", (
        ("mmap", at(8), 4 * P, RW, ANON_FIXED | 0x100, -1, 0),
        ("touch", at(7), True))),
]


@pytest.mark.parametrize(("rule", "calls"), MASKED, ids=[rule for rule, _ in MASKED])
def test_masking_rule_hides_a_real_difference(rule: str, calls: tuple[Any, ...]) -> None:
    program = Program(files=(), calls=calls)
    masked = run_model(program, RefAddressSpace, CONFIG)
    assert masked.dropped == ((len(calls) - 1, rule),)
    assert check_program(program, RefAddressSpace, CONFIG).ok
    unmasked = check_program(program, RefAddressSpace, CONFIG, masking=False)
    assert not unmasked.ok, f"{rule}: the host agrees with 4.6 here; the rule is not needed"


# -- the comparison catches a wrong model ---------------------------------------------------------


class _MunmapOnePageShort(RefAddressSpace):
    """munmap leaves the last page of a multi-page range mapped."""

    def munmap(self, addr: int, length: int) -> int:
        return super().munmap(addr, length - P if length > P else length)


class _ZeroLengthMunmapSucceeds(RefAddressSpace):
    """munmap(addr, 0) returns 0 instead of 4.6's -EINVAL."""

    def munmap(self, addr: int, length: int) -> int:
        return 0 if length == 0 else super().munmap(addr, length)


def test_a_wrong_errno_is_caught_and_reported() -> None:
    program = Program(files=(), calls=(("mmap", at(0), P, RW, ANON_FIXED, -1, 0),
                                       ("munmap", at(0), 0)))
    outcome = check_program(program, _ZeroLengthMunmapSucceeds, CONFIG)
    assert outcome.divergence is not None
    assert outcome.divergence.what == "result"
    text = report(outcome, seed=5)
    assert "seed 5" in text
    assert "host -EINVAL, model 0  <-- diverges" in text


def test_a_wrong_map_is_caught_by_random_sequences_and_shrunk() -> None:
    result = run_oracle("vma", examples=200, seed=1, factory=_MunmapOnePageShort)
    assert result.failure is not None
    assert "first difference: maps" in result.failure
    assert "| model (4.6)" in result.failure
    calls = [line for line in result.failure.splitlines() if line.startswith("    ")]
    assert len(calls) == 2  # an mmap and the munmap that leaves a page behind
