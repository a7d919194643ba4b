"""Rendering of library results: JSON documents and rich text.

Library functions return dataclasses; this module is the only place that knows how
they look. JSON documents carry `schema_version` so scripts can rely on their shape.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from datetime import datetime, timezone
from enum import Enum
from functools import singledispatch
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

JSON_SCHEMA_VERSION = 1


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    return value


def json_document(*, command: str, exit_code: int, context: dict[str, Any], result: Any = None, error: str | None = None) -> str:
    document: dict[str, Any] = {"schema_version": JSON_SCHEMA_VERSION, "command": command, "exit_code": int(exit_code)}
    document.update(context)
    if error is not None:
        document["error"] = error
    if error is None or result is not None:  # a report that failed a precondition carries both
        document["result"] = to_jsonable(result)
    return json.dumps(document, indent=2, sort_keys=False)


def age_text(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(timezone.utc)) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


_STATE_STYLE = {"ok": "green", "problem": "yellow", "precondition": "red", "failed": "bold red"}


@singledispatch
def render_text(result: Any, console: Console) -> None:
    """Fallback: a two-column table of the dataclass's fields."""
    table = Table(show_header=False, box=None)
    for key, value in to_jsonable(result).items():
        table.add_row(key, str(value))
    console.print(table)


def register_renderers() -> None:
    """Bind renderers to result types; imported lazily so `--help` loads none of them."""
    from integrity.initialize import InitResult
    from integrity.ledger_report import HistoryReport
    from integrity.status import StatusReport

    render_text.register(StatusReport, _render_status)
    render_text.register(InitResult, _render_init)
    render_text.register(HistoryReport, _render_history)
    from integrity import report_backups

    report_backups.register(render_text)
    from integrity import report_audits
    report_audits.register(render_text)
    from integrity import report_drill
    report_drill.register(render_text)
    from integrity import report_restore
    report_restore.register(render_text)
    from integrity import report_recovery_diff
    report_recovery_diff.register(render_text)
    from integrity import report_schedule
    report_schedule.register(render_text)
    from integrity import report_probe
    report_probe.register(render_text)
    from integrity import report_migrate
    report_migrate.register(render_text)


def _render_status(report, console: Console) -> None:
    table = Table(title=None, show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("state")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        style = _STATE_STYLE.get(check.state.value, "")
        table.add_row(check.name, f"[{style}]{check.state.value}[/]", escape(check.detail))
    console.print(table)
    if report.row_counts:
        counts = Table(show_header=True, header_style="bold")
        counts.add_column("table")
        counts.add_column("rows", justify="right")
        for name, count in report.row_counts.items():
            counts.add_row(name, f"{count:,}")
        console.print(counts)
    console.print(f"exit code {int(report.exit_code)}")


def _render_init(result, console: Console) -> None:
    config = "written" if result.config_written else "kept (already there)"
    schema = "created" if result.schema_created else result.schema
    console.print(f"config      {result.config_path} ({config})")
    console.print(f"state dir   {result.state_dir}")
    console.print(f"repository  {result.repository}")
    console.print(f"database    {result.database}")
    console.print(f"schema      {schema}")


def _render_history(report, console: Console) -> None:
    if not report.runs:
        console.print("no runs recorded yet")
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("started (UTC)", "command", "outcome", "exit", "seconds", "host"):
        table.add_column(column)
    for run in report.runs:
        seconds = f"{run.duration_seconds:.2f}" if run.duration_seconds is not None else "-"
        table.add_row(
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            run.command,
            run.outcome,
            "-" if run.exit_code is None else str(run.exit_code),
            seconds,
            run.host,
        )
    console.print(table)
