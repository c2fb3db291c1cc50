"""OOM victim selection: fastmodel against refmodel, as ratios measured side by side in one run.

For each size a seeded task list is built once (init, kernel threads, mostly single-threaded
user processes, some multi-threaded ones and some sharing an mm, a spread of oom_score_adj,
some root processes; no TIF_MEMDIE thread, so the scan is never cut short), then
``select_bad_process`` runs on both models in alternating rounds until each has had
``--min-time`` seconds.  Also timed: fastmodel's whole-array selection
(``select_by_arrays``), once on a table of columns built beforehand, as a kernel model that
keeps its processes in columns would call it, and once including the copy of the
descriptors into that table.  All must return the same Choice, or no ratio is printed.

    python bench/bench_oom.py                        # 100, 1,000 and 10,000 tasks: ~15 s
    python bench/bench_oom.py --sizes 100000 --min-time 2
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from fastmodel.oom import FAST_OOM, TaskTable, select_by_arrays
from refmodel.oom import OOM46
from specs.oom import Task, Thread

TOTALPAGES = 1 << 22  # 16 GiB of RAM and swap


def task_list(count: int, seed: int) -> list[Task]:
    """``count`` processes in creation order; pid 1 is init, the next few kernel threads."""
    rng = random.Random(seed)
    tasks = [Task(1, (Thread(1),), 1, rss=2000, nr_ptes=4)]
    tasks += [Task(pid, (Thread(pid),), None, kthread=True) for pid in range(2, 12)]
    pid = 100
    while len(tasks) < count:
        pid += 1
        nthreads = 1 if rng.random() < 0.9 else rng.randint(2, 8)
        tids = [pid] + [pid * 1000 + i for i in range(1, nthreads)]
        threads = tuple(Thread(t, has_mm=rng.random() > 0.02) for t in tids)
        sharer = rng.random() < 0.05 and len(tasks) > 12
        source = tasks[rng.randrange(11, len(tasks))] if sharer else None
        mm = source.mm if source is not None and source.mm is not None else pid
        rss = source.rss if source is not None else int(rng.paretovariate(1.2) * 200)
        tasks.append(Task(
            pid, threads, mm, rss=rss, swapents=rng.choice((0, 0, 0, rng.randint(0, 500))),
            nr_ptes=1 + rss // 512, nr_pmds=1 + rss // (512 * 512),
            oom_score_adj=rng.choice((0, 0, 0, 0, -1000, -500, 200, 1000)),
            cap_sys_admin=rng.random() < 0.2,
            children=tuple(rng.randrange(101, pid + 1) for _ in range(rng.randint(0, 2)))))
    return tasks[:count]


def timed(call: Callable[[], object], times: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(times):
        call()
    return time.perf_counter() - start


#: what is timed, in table order
KINDS = ("ref", "fast", "table", "columns")


def measure(count: int, seed: int, min_time: float) -> tuple[dict[str, float], bool]:
    """Seconds per call of each kind, and whether all chose the same."""
    tasks = task_list(count, seed)
    table = TaskTable.of(tasks)
    calls: dict[str, Callable[[], object]] = {
        "ref": lambda: OOM46.select_bad_process(tasks, TOTALPAGES),
        "fast": lambda: FAST_OOM.select_bad_process(tasks, TOTALPAGES),
        "table": lambda: select_by_arrays(TaskTable.of(tasks), TOTALPAGES),
        "columns": lambda: select_by_arrays(table, TOTALPAGES),
    }
    results = {kind: call() for kind, call in calls.items()}
    same = len(set(map(repr, results.values()))) == 1
    # batches of about 20 ms per kind, alternated, so load on the machine hits all alike
    batch = {kind: max(1, int(0.02 / max(timed(calls[kind]), 1e-7))) for kind in KINDS}
    spent = dict.fromkeys(KINDS, 0.0)
    done = dict.fromkeys(KINDS, 0)
    while min(spent.values()) < min_time:
        for kind in KINDS:
            spent[kind] += timed(calls[kind], batch[kind])
            done[kind] += batch[kind]
    return {kind: spent[kind] / done[kind] for kind in KINDS}, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds of calls per kind and size")
    parser.add_argument("--seed", type=int, default=46)
    args = parser.parse_args()
    print("| tasks | refmodel µs | fastmodel µs (ratio) | arrays incl. table µs (ratio) "
          "| arrays on columns µs (ratio) | same choice |")
    print("|---|---|---|---|---|---|")
    for count in args.sizes:
        per_call, same = measure(count, args.seed, args.min_time)
        ref = per_call["ref"]
        cells = [f"{per_call[kind] * 1e6:,.1f} ({ref / per_call[kind]:.1f}x)" if same else "n/a"
                 for kind in KINDS[1:]]
        print(f"| {count:,} | {ref * 1e6:,.1f} | {' | '.join(cells)} | "
              f"{'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
