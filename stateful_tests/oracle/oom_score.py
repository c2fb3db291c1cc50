"""The host kernel's ``/proc/<pid>/oom_score`` against the newer badness formula.

A child process of known size (it maps and writes ``pages`` anonymous pages) sets its own
``oom_score_adj`` and waits; the parent reads the child's ``/proc/<pid>/status`` counters and
its ``oom_score``, and predicts the score with :func:`refmodel.oom.oom_score_v6` from those
counters and the host's ``totalpages`` (MemTotal + SwapTotal in pages, which is
``totalram_pages() + total_swap_pages``).  The host runs a kernel newer than 5.9, so the 4.6
formula of ``specs/oom.md`` is *not* what it reports; ``tests/oracle/test_oom_oracle.py`` pins
both, each against what it must match.

Tolerance.  Since 6.2 the RSS counters are per-CPU counters: ``status`` shows the folded
value, which can lag the exact sum the OOM killer takes by up to one batch per CPU per
counter.  A comparison therefore accepts any score the formula gives for a badness within
:func:`counter_slack` pages of the one read; everything else must match exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import attrs

from refmodel.oom import oom_score_v6
from specs.oom import Task, Thread

KB_PER_PAGE = 4
CAP_SYS_RESOURCE = 24
#: percpu_counter_batch is max(32, 2 * online CPUs); RSS has file, anon and shmem counters,
#: and swap entries a fourth.
RACY_COUNTERS = 4

#: The child: map and write ``pages`` pages, apply each oom_score_adj write, report each
#: write's errno (0 for success), then wait for a line on stdin before exiting.
CHILD = r"""
import mmap, os, sys
pages = int(sys.argv[1])
keep = None
if pages:
    keep = mmap.mmap(-1, pages * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, pages * 4096, 4096):
        keep[offset] = 1
results = []
for value in sys.argv[2:]:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(value)
        results.append("0")
    except OSError as exc:
        results.append(str(exc.errno))
print(" ".join(results) or "-", flush=True)
sys.stdin.readline()
"""


@attrs.frozen
class Sample:
    """What the host showed for one child."""

    pid: int
    pages: int
    #: errno of each oom_score_adj write, in order (0: accepted)
    write_errors: tuple[int, ...]
    oom_score_adj: int
    oom_score: int
    vmrss_kb: int
    rss_anon_kb: int
    vmpte_kb: int
    vmswap_kb: int

    def task(self) -> Task:
        """The child as the newer formula reads it: RSS, swap entries, page tables of all
        levels (VmPTE counts every level on these kernels), in pages."""
        return Task(pid=self.pid, threads=(Thread(self.pid),), mm=self.pid,
                    rss=self.vmrss_kb // KB_PER_PAGE, swapents=self.vmswap_kb // KB_PER_PAGE,
                    nr_ptes=self.vmpte_kb // KB_PER_PAGE, oom_score_adj=self.oom_score_adj)


def meminfo_kb(field: str, text: str | None = None) -> int:
    text = Path("/proc/meminfo").read_text(encoding="ascii") if text is None else text
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def host_totalpages() -> int:
    """totalram_pages() + total_swap_pages, as proc_oom_score computes it."""
    return (meminfo_kb("MemTotal") + meminfo_kb("SwapTotal")) // KB_PER_PAGE


def status_fields(text: str) -> dict[str, int]:
    """The ``kB`` fields of a /proc/<pid>/status text."""
    found = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            found[key] = int(parts[0])
    return found


def has_cap_sys_resource() -> bool:
    """CAP_SYS_RESOURCE in our effective set: needed to put oom_score_adj below its minimum
    (and so below 0 for a child that inherited the minimum 0)."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def counter_slack() -> int:
    """Pages by which the folded RSS counters in status may differ from the exact sum."""
    cpus = os.cpu_count() or 1
    return RACY_COUNTERS * max(32, 2 * cpus) * cpus


def probe(pages: int, writes: tuple[int, ...] = ()) -> Sample:
    """Run one child and read it while it waits; retries the reads until status is the
    same before and after the score (the child is idle, so this settles at once)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(pages), *map(str, writes)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        line = child.stdout.readline().split()
        errors = tuple(int(e) for e in line if e != "-")
        base = Path(f"/proc/{child.pid}")
        for _attempt in range(20):
            before = status_fields((base / "status").read_text(encoding="ascii"))
            score = int((base / "oom_score").read_text(encoding="ascii"))
            adj = int((base / "oom_score_adj").read_text(encoding="ascii"))
            after = status_fields((base / "status").read_text(encoding="ascii"))
            if before == after:
                break
            time.sleep(0.01)
        return Sample(child.pid, pages, errors, adj, score, after["VmRSS"], after.get("RssAnon", 0),
                      after["VmPTE"], after.get("VmSwap", 0))
    finally:
        child.stdin.write("\n")
        child.stdin.close()
        child.wait(timeout=30)


def predicted_range(sample: Sample, totalpages: int, slack: int) -> tuple[int, int]:
    """The lowest and highest score the newer formula gives for an RSS within ``slack``
    pages of the one read (the formula is monotone in RSS)."""
    task = sample.task()
    low = attrs.evolve(task, rss=max(task.rss - slack, 0))
    high = attrs.evolve(task, rss=task.rss + slack)
    return oom_score_v6(low, totalpages), oom_score_v6(high, totalpages)


def compare(sample: Sample, totalpages: int, slack: int) -> str | None:
    """None when the host's score is what the newer formula predicts, else why not."""
    exact = oom_score_v6(sample.task(), totalpages)
    low, high = predicted_range(sample, totalpages, slack)
    if low <= sample.oom_score <= high:
        return None
    return (f"{sample.pages} pages, adj {sample.oom_score_adj}: host oom_score "
            f"{sample.oom_score}, formula {exact} (accepted {low}..{high}; VmRSS "
            f"{sample.vmrss_kb} kB, VmPTE {sample.vmpte_kb} kB, VmSwap {sample.vmswap_kb} kB, "
            f"totalpages {totalpages})")
