"""The OOM mutants that swap only the policy also break fastmodel's kernel, and the checks
catch them there.

``tests/mutants/oom.py`` builds its kernels on RefKernel.  FastKernel takes any object with
the policy's methods as ``oom_policy`` (``fastmodel.oom_kernel.OomPolicy``), so each of those
broken policies is put into a FastKernel subclass here and run as ``tests/test_mutants.py``
runs the originals: contract mode, only the target check enabled, which must fail.  The
mutants that break the glue or a kernel method are RefKernel code and are not repeated.
"""

from __future__ import annotations

from typing import Any

import pytest

from fastmodel.kernel import FastKernel
from tests.mutants import oom as oom_mutants
from vmconform.checking import FAIL, run_check

#: examples per run: ``tests/test_mutants.py``'s budget, at which each original is caught
EXAMPLES = 60


def policy_only(cls: type) -> bool:
    """A mutant kernel whose whole change is its ``oom_policy``."""
    own = {name for name in vars(cls) if not name.startswith("__")}
    return own == {"target", "oom_policy"}


#: name -> a FastKernel subclass carrying one mutant's broken policy, importable by name
FAST_MUTANTS: dict[str, type[FastKernel]] = {}
for _cls in vars(oom_mutants).values():
    if isinstance(_cls, type) and issubclass(_cls, oom_mutants.OomMutantKernel) \
            and policy_only(_cls):
        _fast = type(f"Fast{_cls.__name__}", (FastKernel,),
                     {"__module__": __name__, "__doc__": _cls.__doc__, "subsystem": "oom",
                      "target": _cls.target, "oom_policy": _cls.oom_policy})
        FAST_MUTANTS[_fast.__name__] = _fast
        globals()[_fast.__name__] = _fast


def test_every_policy_mutant_has_a_fast_twin() -> None:
    assert len(FAST_MUTANTS) >= 7
    assert "FastScoreDividesLast" in FAST_MUTANTS
    assert "FastDyingProcessKeepsRunning" not in FAST_MUTANTS  # overrides a kernel method


@pytest.mark.parametrize("name", sorted(FAST_MUTANTS))
def test_policy_mutant_on_fastkernel_is_caught(name: str) -> None:
    mutant: Any = FAST_MUTANTS[name]
    report = run_check(f"{__name__}:{name}", subsystem="oom", mode="contract",
                       only=frozenset({mutant.target}), shrink_more=False, shrink=False,
                       keep_going=False, examples=EXAMPLES)
    result = next(r for r in report.results if r.id == mutant.target)
    assert FAIL == result.status, result.reason
    assert result.failure is not None
    assert mutant.target == result.failure.check_id
