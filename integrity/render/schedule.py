"""Text renderers of `integrity schedule list` and of `schedule run` when it stops."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from integrity.timeparse import age_text


def register(render_text) -> None:
    from integrity.scheduler.daemon import SchedulerStopped
    from integrity.scheduler.listing import ScheduleListing

    render_text.register(ScheduleListing, render_listing)
    render_text.register(SchedulerStopped, render_stopped)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def render_listing(listing, console: Console) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("job", "schedule", "next fire (UTC)", "last run", "outcome", "last success", "health"):
        table.add_column(column, overflow="fold")
    for job in listing.jobs:
        last = job.last_run
        outcome = "-" if last is None else f"{last.outcome} ({last.exit_code})"
        if job.schedule == "off":
            health = "off"
        elif job.overdue:
            health = "OVERDUE"
        else:
            health = "ok"
        if job.skipped_since_success or job.missed_since_success:
            health += f", {job.skipped_since_success} skipped, {job.missed_since_success} missed"
        table.add_row(
            job.job, job.schedule, _when(job.next_fire), age_text(last.started_at, listing.now) if last else "never",
            outcome, age_text(job.last_success.started_at, listing.now) if job.last_success else "never", health,
        )
    console.print(table)
    beat = listing.heartbeat
    if beat is not None:
        console.print(f"scheduler: last heartbeat {age_text(beat.beat_at, listing.now)} from {beat.host} pid {beat.pid} ({beat.state})",
                      highlight=False, markup=False)
    else:
        console.print("scheduler: no heartbeat recorded (cron, or `integrity schedule run` never ran)", highlight=False, markup=False)


def render_stopped(report, console: Console) -> None:
    console.print(
        f"scheduler stopped ({report.signal_name or 'no signal'}) after "
        f"{(report.stopped_at - report.started_at).total_seconds():.0f}s: {report.runs} run(s), {report.failed} failed, "
        f"{report.skipped} skipped, {report.missed} missed",
        highlight=False, markup=False,
    )
