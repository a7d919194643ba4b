"""Text renderers of `integrity notify test` and `integrity notify status`."""

from __future__ import annotations

from rich.console import Console

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
    # Lines, not a table: the details and target errors are sentences that a table folds.
    for row in report.rows:
        state = "ACTIVE" if row.active else "clear"
        console.print(f"{row.key}: {state} since {row.changed_at:%Y-%m-%d %H:%M:%SZ}: {row.detail}", **_PLAIN)
        if row.last_error and row.error_at:
            console.print(f"  last delivery failure {row.error_at:%Y-%m-%d %H:%M:%SZ}: {row.last_error}", **_PLAIN)
