"""Text renderer of `integrity drill`'s report."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def register(render_text) -> None:
    from integrity.recovery.drill import DrillReport

    render_text.register(DrillReport, render_drill)


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:,.0f}s" if seconds >= 100 else f"{seconds:.2f}s"


def render_drill(report, console: Console) -> None:
    plain = {"highlight": False, "markup": False}
    outcome = {0: "passed", 3: "worked, with problems", 5: "FAILED"}[int(report.exit_code)]
    point = report.point_in_time
    if point is None:
        console.print(f"drill of backup {report.backup_id} ({report.engine}): {outcome}", **plain)
    else:
        console.print(f"drill of the {point['engine']} archive at {point['moment']} ({report.engine}): {outcome}", **plain)
        console.print(f"  asked: {point['asked']}; window {point['window_oldest']} to {point['window_newest']}", **plain)

    phases = Table(show_header=True, header_style="bold")
    for column in ("phase", "seconds", "result", "detail"):
        phases.add_column(column, justify="right" if column == "seconds" else "left", overflow="fold")
    for phase in report.phases:
        result = "ok" if phase.ok else "[bold red]failed[/]"
        phases.add_row(phase.name, f"{phase.seconds:.3f}", result, escape(phase.detail))
    console.print(phases)

    if report.tables:
        tables = Table(show_header=True, header_style="bold", title="live against the backup")
        for column in ("table", "live rows", "backup rows", "only live", "only backup", "changed", "differing"):
            tables.add_column(column, justify="left" if column == "table" else "right")
        for t in report.tables:
            tables.add_row(t.table, f"{t.live_rows:,}", f"{t.backup_rows:,}", f"{t.only_live:,}", f"{t.only_backup:,}",
                           f"{t.changed:,}", f"{t.differing_share:.2%}")
        console.print(tables)

    prediction = report.prediction
    if prediction is not None:
        console.print(
            f"predicted full restore {_duration(prediction.total_seconds)} (rto {report.rto_seconds}s: "
            f"{_verdict(report.rto_met)}) = measured {_duration(prediction.recovery_seconds)}"
            f" + safety backup {_duration(prediction.safety_backup_seconds)}"
            f" + swap {_duration(prediction.swap_seconds)}",
            **plain,
        )
        console.print(f"  safety backup: {prediction.safety_backup_basis}", **plain)
        console.print(f"  swap: {prediction.swap_basis}", **plain)
    if report.backup_age_seconds is not None:
        console.print(
            f"backup age {_duration(report.backup_age_seconds)} (rpo {report.rpo_seconds}s: {_verdict(report.rpo_met)})",
            **plain,
        )
    if report.audit:
        console.print(f"audit of the restored copy: {report.audit}", **plain)
    for problem in report.problems:
        console.print(f"failed: {problem}", **plain)
    for finding in report.findings:
        console.print(f"problem: {finding}", **plain)
    if report.exit_code:
        console.print("see runbooks/drill-failed.md", **plain)
    console.print(f"exit code {int(report.exit_code)}", **plain)
