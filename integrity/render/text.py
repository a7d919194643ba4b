"""Results as rich text on the terminal: one renderer per result type.

`render_text(result, console)` dispatches on the result's type. The topic modules
(`backups`, `audits`, ...) each bind their renderers in `register(dispatcher)`; they
never import this module, so the registry below imports them without a circle.

A run renders one result, so only the topic of that result's type is imported
(`_TOPIC_OF`, by the module that defines the type): importing every topic imports every
operation's module (restore, salvage, the dry run, ...), about a third of a second of a
`status` run. A type whose module is missing from the table still renders with its own
renderer: when its topic is unknown every topic is bound, once per process.
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
    _bind_renderers_of(type(result))
    _render(result, console)


@singledispatch
def _render(result: Any, console: Console) -> None:
    """Fallback: a two-column table of the dataclass's fields."""
    table = Table(show_header=False, box=None)
    for key, value in to_jsonable(result).items():
        table.add_row(key, str(value))
    console.print(table)


# The module that defines a result type -> the topic (integrity.render.<topic>) whose
# `register` binds its renderer; "text" is this module's own `_register`.
_TOPIC_OF = {
    "integrity.status": "text",
    "integrity.initialize": "text",
    "integrity.ledger_report": "text",
    "integrity.prometheus": "text",
    "integrity.audits": "audits",
    "integrity.backups.catalog": "backups",
    "integrity.backups.check": "backups",
    "integrity.backups.copy": "backups",
    "integrity.migrate.gate": "migrate",
    "integrity.backups.create": "backups",
    "integrity.backups.prune": "backups",
    "integrity.backups.verify": "backups",
    "integrity.backups.signing": "backups",
    "integrity.recovery.drill": "drill",
    "integrity.recovery.restore": "restore",
    "integrity.recovery.salvage": "restore",
    "integrity.recovery.point_in_time": "restore",
    "integrity.recovery.diff": "recovery_diff",
    "integrity.recovery.repair": "recovery_diff",
    "integrity.scheduler.daemon": "schedule",
    "integrity.scheduler.listing": "schedule",
    "integrity.probe": "probe",
    "integrity.migrate.dry_run": "migrate",
    "integrity.migrate.rules": "migrate",
    "integrity.migrate.apply": "migrate",
    "integrity.render.migrate": "migrate",
    "integrity.pitr.operations": "pitr",
    "integrity.snapshots.export": "snapshots",
    "integrity.notify": "notify",
    "integrity.evidence": "report_html",
    "integrity.render.report_html": "report_html",
}
TOPICS = ("text", "snapshots", "backups", "audits", "drill", "restore", "recovery_diff", "schedule", "probe", "migrate", "pitr", "notify", "report_html")


def _bind_renderers_of(kind: type) -> None:
    topic = _TOPIC_OF.get(kind.__module__)
    if topic is not None:
        _bind_topic(topic)
    if _render.dispatch(kind) is _render.dispatch(object):
        _bind_every_topic()  # a type this table does not know yet: slower, never wrong


@cache
def _bind_every_topic() -> None:
    for topic in TOPICS:
        _bind_topic(topic)


@cache
def _bind_topic(topic: str) -> None:
    if topic == "text":
        _register(_render)
        return
    from importlib import import_module

    import_module(f"integrity.render.{topic}").register(_render)


def _register(render) -> None:
    from integrity.initialize import InitResult
    from integrity.ledger_report import HistoryReport
    from integrity.prometheus import MetricsReport
    from integrity.status import StatusReport

    render.register(StatusReport, _render_status)
    render.register(InitResult, _render_init)
    render.register(HistoryReport, _render_history)
    render.register(MetricsReport, _render_metrics)


def _render_metrics(report, console: Console) -> None:
    # The exposition text exactly as written to the file: no wrapping, no markup.
    console.file.write(report.text)
    console.file.flush()


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
