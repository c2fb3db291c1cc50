"""Conformance reports: the check-by-implementation table and the failure details."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from vmconform.checking import FAIL, NOT_RUN, PASS, SKIP, RunReport

STYLES = {PASS: "[green]pass[/]", FAIL: "[bold red]FAIL[/]", SKIP: "[dim]skip[/]",
          NOT_RUN: "[yellow]not run[/]"}


def render_table(subsystem: str, reports: list[RunReport]) -> Table:
    """Rows: check IDs; columns: implementation (mode)."""
    table = Table(title=f"{subsystem}: conformance to Linux 4.6", title_justify="left")
    table.add_column("check")
    table.add_column("property")
    for report in reports:
        table.add_column(escape(f"{report.impl}\n({report.mode}, {report.preset}, seed "
                                f"{report.seed})"),
                         justify="center")
    if not reports:
        return table
    for row, result in enumerate(reports[0].results):
        cells = []
        for report in reports:
            verdict = report.results[row]
            cell = STYLES.get(verdict.status, verdict.status)
            if verdict.status in (SKIP, NOT_RUN) and verdict.reason:
                cell += f"[dim] ({escape(verdict.reason)})[/]"
            cells.append(cell)
        table.add_row(escape(result.id), escape(result.title), *cells)
    return table


def render_failures(console: Console, reports: list[RunReport]) -> None:
    """One panel per failure: message, the shrunk steps, and how to replay them."""
    for report in reports:
        for result in report.failed:
            failure = result.failure
            if failure is None:
                continue
            steps = "\n".join(
                f"  {n:3}. {s['rule']}(" + ", ".join(f"{k}={v}" for k, v in s["args"].items())
                + ")" for n, s in enumerate(failure.steps, 1)) or "  (no steps: at boot)"
            replay = (f"\nreplay: vmconform replay {failure.reproducer}" if failure.reproducer
                      else "")
            body = (f"{failure.message}\n\nsteps ({len(failure.steps)}):\n{steps}\n\n"
                    f"seed {report.seed}, preset {report.preset}, mode {report.mode}; rerun: "
                    f"vmconform check {report.subsystem} --impl {report.impl} --mode "
                    f"{report.mode} --seed {report.seed} --preset {report.preset}{replay}")
            title = Text.assemble((result.id, "bold red"), f" {result.title} — {report.impl}")
            console.print(Panel(Text(body), title=title, title_align="left"))
