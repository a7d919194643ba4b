"""Results as rich text on the terminal: one renderer per result type.

`render_text(result, console)` dispatches on the result's type. The topic modules
(`backups`, `audits`, ...) each bind their renderers in `register(dispatcher)`; they
never import this module, so the registry below imports them without a circle, and
binds them once per process (`_bind_renderers`), not on every emit.
"""

from __future__ import annotations

from functools import cache, singledispatch
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from integrity.render.document import to_jsonable

_STATE_STYLE = {"ok": "green", "problem": "yellow", "precondition": "red", "failed": "bold red"}


def render_text(result: Any, console: Console) -> None:
    """Render `result` on `console` with the renderer bound to its type."""
    _bind_renderers()
    _render(result, console)


@singledispatch
def _render(result: Any, console: Console) -> None:
    """Fallback: a two-column table of the dataclass's fields."""
    table = Table(show_header=False, box=None)
    for key, value in to_jsonable(result).items():
        table.add_row(key, str(value))
    console.print(table)


@cache
def _bind_renderers() -> None:
    # Imported on first render, not at import: `--help` and --json load none of them.
    from integrity.initialize import InitResult
    from integrity.ledger_report import HistoryReport
    from integrity.render import audits, backups, drill, migrate, probe, recovery_diff, restore, schedule
    from integrity.status import StatusReport

    _render.register(StatusReport, _render_status)
    _render.register(InitResult, _render_init)
    _render.register(HistoryReport, _render_history)
    for topic in (backups, audits, drill, restore, recovery_diff, schedule, probe, migrate):
        topic.register(_render)


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
