"""The host's /proc/<pid>/oom_score follows the newer badness formula (``oom_score_v6``), and
4.6's formula would not match it: both formulas are pinned, each against what it must match.

Children of known size set their own oom_score_adj (raising needs no privilege; going below
the inherited minimum needs CAP_SYS_RESOURCE, which the development VM lacks, so those cases
are skipped there).  See ``stateful_tests/oracle/oom_score.py`` for the counter tolerance.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from refmodel.oom import OOM46
from specs.oom import Task, Thread
from stateful_tests.oracle import oom_score as oracle

STATUS = """Name:\tpython3
VmRSS:\t   76452 kB
RssAnon:\t   70324 kB
VmPTE:\t     200 kB
VmSwap:\t       0 kB
Threads:\t1
"""


def test_status_fields_parse_kb_lines_only() -> None:
    assert {"VmRSS": 76452, "RssAnon": 70324, "VmPTE": 200, "VmSwap": 0} == (
        oracle.status_fields(STATUS))


def test_meminfo_field() -> None:
    text = "MemTotal:       24684100 kB\nSwapTotal:             0 kB\n"
    assert (24684100, 0) == (oracle.meminfo_kb("MemTotal", text),
                             oracle.meminfo_kb("SwapTotal", text))


def test_predicted_range_widens_with_slack() -> None:
    """76452 kB RSS = 19113 pages, + 200 kB = 50 pages of tables = 19163; totalpages 6171025:
    19163000 / 6171025 = 3.1 -> (1003)*2/3 = 668.  With 10000 pages of slack: 9163 -> 1.5 ->
    1 -> 1001*2/3 = 667; 29163 -> 4.7 -> 4 -> 1004*2/3 = 669."""
    sample = oracle.Sample(50, 16384, (), 0, 0, 76452, 70324, 200, 0)
    assert (668, 668) == oracle.predicted_range(sample, 6171025, 0)
    assert (667, 669) == oracle.predicted_range(sample, 6171025, 10000)
    assert oracle.compare(sample, 6171025, 0) is not None  # a score of 0 is not 668
    assert oracle.compare(oracle.Sample(50, 16384, (), 0, 668, 76452, 70324, 200, 0),
                          6171025, 0) is None


# ---------------------------------------------------------------------------------------------
# Against the running kernel
# ---------------------------------------------------------------------------------------------


def host_skip_reason() -> str | None:
    if not Path("/proc/self/oom_score").exists():
        return "no /proc/<pid>/oom_score on this host"
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if match is None or (int(match.group(1)), int(match.group(2))) < (5, 9):
        return f"host kernel {os.uname().release} predates the newer formula (5.9)"
    return None


needs_host = pytest.mark.skipif(host_skip_reason() is not None,
                                reason=str(host_skip_reason()))

#: (pages mapped and written by the child, oom_score_adj it writes); 16384 pages = 64 MiB
CASES = [(0, 0), (16384, 0), (16384, 1), (16384, 500), (0, 1000), (65536, 999)]


@pytest.fixture(scope="module")
def samples() -> dict[tuple[int, int], oracle.Sample]:
    return {(pages, adj): oracle.probe(pages, (adj,) if adj else ()) for pages, adj in CASES}


@pytest.mark.oracle
@needs_host
@pytest.mark.parametrize(("pages", "adj"), CASES)
def test_host_score_is_the_newer_formula(samples: dict[tuple[int, int], oracle.Sample],
                                         pages: int, adj: int) -> None:
    sample = samples[pages, adj]
    assert (adj, [0] * len(sample.write_errors)) == (sample.oom_score_adj,
                                                     list(sample.write_errors))
    problem = oracle.compare(sample, oracle.host_totalpages(), oracle.counter_slack())
    assert problem is None, problem


@pytest.mark.oracle
@needs_host
def test_children_have_the_size_they_were_given(
        samples: dict[tuple[int, int], oracle.Sample]) -> None:
    """RssAnon grows by the pages written (give or take the counter slack and a megabyte of
    interpreter noise), so the scores above are for processes of known size."""
    for pages in (16384, 65536):
        grown = (samples[pages, next(a for p, a in CASES if p == pages)].rss_anon_kb
                 - samples[0, 0].rss_anon_kb) // oracle.KB_PER_PAGE
        assert abs(grown - pages) <= oracle.counter_slack() + 256, (pages, grown)


@pytest.mark.oracle
@needs_host
def test_host_is_not_46(samples: dict[tuple[int, int], oracle.Sample]) -> None:
    """4.6's formula on the same counters gives a different number in every case: its scale
    is 0..1000 and starts at 0, the host's is 0..2000 and starts at 666 for adj 0 (so with
    adj 0 and under 1/3 of memory, 4.6 reads below 334 and the host at least 666)."""
    totalpages = oracle.host_totalpages()
    for (pages, adj), sample in samples.items():
        as_46 = OOM46.oom_score(sample.task(), totalpages)
        assert as_46 != sample.oom_score, (pages, adj, as_46)
        if adj == 0:
            assert as_46 < 334, (pages, as_46)
            assert sample.oom_score >= 666, (pages, sample.oom_score)


@pytest.mark.oracle
@needs_host
def test_adj_writes_are_refused_as_46_refuses_them() -> None:
    """Out of range -> EINVAL; below the minimum without CAP_SYS_RESOURCE -> EACCES; a
    lowering that stays above the minimum is allowed.  The reference model's
    oom_score_adj_write gives the same answers (the child inherits our adj and minimum; the
    minimum is taken to be 0, so this needs our own adj to be 0)."""
    if int(Path("/proc/self/oom_score_adj").read_text(encoding="ascii")) != 0:
        pytest.skip("this process runs with a non-zero oom_score_adj; the inherited minimum "
                    "is unknown")
    cap = oracle.has_cap_sys_resource()
    writes = (1001, -1001, 500, 100, -1)
    sample = oracle.probe(0, writes)
    task: Task = Task(10, (Thread(10),), 10)
    model = []
    for value in writes:
        result, task = OOM46.oom_score_adj_write(task, value, cap)
        model.append(-result)
    assert model == list(sample.write_errors)
    assert task.oom_score_adj == sample.oom_score_adj
    if not cap:
        assert (errno.EINVAL, errno.EINVAL, 0, 0, errno.EACCES) == sample.write_errors


@pytest.mark.oracle
@needs_host
def test_negative_adj_score() -> None:
    """Below 0 the newer formula subtracts adj * (totalpages / 1000) pages; needs
    CAP_SYS_RESOURCE."""
    if not oracle.has_cap_sys_resource():
        pytest.skip("CAP_SYS_RESOURCE is not in this process's effective set (the "
                    "development VM drops it from the bounding set), so oom_score_adj "
                    "cannot go below 0")
    sample = oracle.probe(65536, (-500,))
    assert -500 == sample.oom_score_adj
    problem = oracle.compare(sample, oracle.host_totalpages(), oracle.counter_slack())
    assert problem is None, problem
