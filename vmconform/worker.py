"""Run one check in a child process, so a plug-in that crashes or hangs cannot take
``vmconform`` down with it.

The parent passes the run_check arguments as JSON; the child writes the report as JSON and
journals every plug-in call (``VMCONFORM_JOURNAL``), so that if it dies the parent can say
which step it died in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from invariants.registry import PLUGIN
from stateful_tests.harness import JOURNAL_ENV
from vmconform.checking import (
    FAIL,
    NOT_RUN,
    CheckResult,
    Failure,
    RunReport,
    check_titles,
    run_check,
)


def run_isolated(timeout: float | None = None, **kwargs: Any) -> RunReport:
    """run_check(**kwargs) in a child process; a crash or timeout becomes a PLUGIN failure."""
    with tempfile.TemporaryDirectory(prefix="vmconform-") as tmp:
        out = Path(tmp) / "report.json"
        journal = Path(tmp) / "journal.jsonl"
        args = {**kwargs, "out": str(out)}
        if args.get("reproducer_dir") is not None:
            args["reproducer_dir"] = str(args["reproducer_dir"])
        if args.get("only") is not None:
            args["only"] = sorted(args["only"])
        env = {**os.environ, JOURNAL_ENV: str(journal),
               "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
        try:
            proc = subprocess.run([sys.executable, "-m", "vmconform.worker", json.dumps(args)],
                                  env=env, timeout=timeout, capture_output=True, text=True,
                                  check=False)
        except subprocess.TimeoutExpired:
            return _died(kwargs, f"the check did not finish within {timeout} s", journal)
        if proc.returncode == 0 and out.exists():
            return RunReport.from_json(json.loads(out.read_text(encoding="utf-8")))
        how = (f"killed by signal {signal.Signals(-proc.returncode).name}"
               if proc.returncode < 0 else f"exit status {proc.returncode}")
        stderr_tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        return _died(kwargs, f"the worker process died ({how})\n{stderr_tail}", journal)


def _died(kwargs: dict[str, Any], why: str, journal: Path) -> RunReport:
    last = ""
    if journal.exists():
        lines = journal.read_text(encoding="utf-8").strip().splitlines()
        if lines:
            last = f"\nlast call journalled before it died: {lines[-1]}"
    subsystem = kwargs.get("subsystem", "buddy")
    titles = check_titles(subsystem)
    results = [CheckResult(cid, title, NOT_RUN, "the worker died") for cid, title in
               titles.items() if cid != PLUGIN]
    results.append(CheckResult(PLUGIN, titles[PLUGIN], FAIL,
                               failure=Failure(PLUGIN, why + last, [])))
    return RunReport(impl=kwargs["impl_name"], subsystem=subsystem,
                     mode=kwargs.get("mode", "lockstep"), preset=kwargs.get("preset_name", "tiny"),
                     seed=kwargs.get("seed", 0), examples=kwargs.get("examples") or 0,
                     results=results, elapsed=0.0)


def main() -> None:
    """Entry point of the child: arguments as one JSON string."""
    args = json.loads(sys.argv[1])
    out = Path(args.pop("out"))
    if args.get("reproducer_dir") is not None:
        args["reproducer_dir"] = Path(args["reproducer_dir"])
    if args.get("only") is not None:
        args["only"] = frozenset(args["only"])
    report = run_check(**args)
    out.write_text(json.dumps(report.to_json()), encoding="utf-8")


if __name__ == "__main__":
    main()
