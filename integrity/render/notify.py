"""Text renderers of `integrity notify test` and `integrity notify status`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

_PLAIN = {"highlight": False, "markup": False}


def register(render_text) -> None:
    from integrity.notify import NotifyStatus, NotifyTestResult

    render_text.register(NotifyTestResult, render_test)
    render_text.register(NotifyStatus, render_status)


def render_test(result, console: Console) -> None:
    console.print(f"sent {result.title!r} to {len(result.deliveries)} target(s)", **_PLAIN)
    for delivery in result.deliveries:
        verdict = "ok" if delivery.ok else f"FAILED: {delivery.error}"
        console.print(f"  target {delivery.target}: {verdict}", **_PLAIN)


def render_status(report, console: Console) -> None:
    targets = ", ".join(report.targets) if report.targets else "none (notifications are off)"
    console.print(f"targets: {targets}", **_PLAIN)
    console.print(f"conditions: {', '.join(report.conditions) or 'none'}", **_PLAIN)
    if not report.rows:
        console.print("no condition notified yet", **_PLAIN)
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("condition", "state", "since", "detail", "last delivery failure"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        failure = f"{row.error_at:%Y-%m-%d %H:%M:%SZ} {row.last_error}" if row.last_error and row.error_at else "-"
        table.add_row(row.key, "ACTIVE" if row.active else "clear", f"{row.changed_at:%Y-%m-%d %H:%M:%SZ}",
                      row.detail, failure)
    console.print(table)
