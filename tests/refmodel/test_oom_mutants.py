"""The hand-computed OOM tables reject every broken policy in ``tests/mutants/oom.py``.

Each broken ``Oom46`` must fail at least one row of the table that covers the function it
breaks.  In a running kernel the same policies are registered mutants (kernels whose
``oom_policy`` is the broken one), caught by the check their ``policy_target`` names; that is
tests/test_mutants.py's business, and the last test here keeps the two layers in step.
"""

from __future__ import annotations

import pytest

from refmodel.oom import Oom46
from tests.mutants import mutants
from tests.mutants import oom as oom_mutants
from tests.refmodel.test_oom import TABLES

#: mutant -> the table that must reject it
EXPECTED_TABLE = {
    oom_mutants.DivisionAfterMultiply: "badness",
    oom_mutants.AdminDiscountAfterAdj: "badness",
    oom_mutants.MinusThousandKillable: "badness",
    oom_mutants.NoFloorOfOne: "badness",
    oom_mutants.ParentOverChild: "kill",
    oom_mutants.KillsWhileVictimDying: "select",
    oom_mutants.SparesMmSharers: "kill",
    oom_mutants.TieGoesToLast: "select",
    oom_mutants.AdjWriteNoRangeCheck: "oom_score_adj_write",
}


def test_every_mutant_has_a_table() -> None:
    assert set(oom_mutants.MUTANTS) == set(EXPECTED_TABLE)


@pytest.mark.parametrize("mutant", oom_mutants.MUTANTS, ids=lambda cls: cls.__name__)
def test_table_rejects_mutant(mutant: type[Oom46]) -> None:
    failures = TABLES[EXPECTED_TABLE[mutant]](mutant())
    assert failures, f"{mutant.__name__} passes the {EXPECTED_TABLE[mutant]} table"


@pytest.mark.parametrize("mutant", oom_mutants.MUTANTS, ids=lambda cls: cls.__name__)
def test_policy_is_one_sentence_and_not_a_kernel(mutant: type[Oom46]) -> None:
    """A policy is no mutant by itself (no ``target``): the runner drives kernels."""
    assert mutant.__doc__
    assert mutant.__doc__.strip().endswith(".")
    assert not hasattr(mutant, "target")


def test_every_policy_runs_in_a_kernel_mutant_of_its_check() -> None:
    """Each policy with a ``policy_target`` is the ``oom_policy`` of a registered kernel
    mutant targeting that check; the one without (mm sharers) cannot occur with one task
    per mm."""
    kernels = {type(cls.oom_policy): cls.target for cls in mutants()
               if cls.__module__ == oom_mutants.__name__ and hasattr(cls, "oom_policy")}
    wanted = {cls: getattr(cls, "policy_target", "") for cls in oom_mutants.MUTANTS
              if getattr(cls, "policy_target", "")}
    assert wanted == {policy: kernels.get(policy) for policy in wanted}
    assert [oom_mutants.SparesMmSharers] == [cls for cls in oom_mutants.MUTANTS
                                             if not getattr(cls, "policy_target", "")]
